from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.batch.schema import COLUMNS, arrow_schema, done_sources, open_sink, read_rows

pa = pytest.importorskip("pyarrow")


def _row(source: str, face: int | None = 0, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "kind": "image", "frame": 0, "model": "m", "model_version": "1"}
    if face is not None:
        row |= {"face": face, "box": [1.0, 2.0, 3.0, 4.0], "landmarks": [[1.5, 2.5]] * 3, "score": 0.5}
    return row | kw


def test_schema_names_every_column_in_order() -> None:
    assert arrow_schema().names == list(COLUMNS)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_rows_round_trip_and_resume_appends(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"r{suffix}"
    sink = open_sink(out, resume=False)
    sink.write([_row("a.jpg", 0), _row("a.jpg", 1)])
    sink.write([_row("b.jpg", None, error="ImageDecodeError: nope")])
    sink.close()
    assert done_sources(out) == {"a.jpg", "b.jpg"}
    sink = open_sink(out, resume=True)
    sink.write([_row("c.jpg", None, pose={"yaw": 1.0, "pitch": 2.0, "roll": 3.0, "reprojection_error": 0.1})])
    sink.close()
    rows = read_rows(out)
    assert [(r["source"], r["face"]) for r in rows] == [
        ("a.jpg", 0),
        ("a.jpg", 1),
        ("b.jpg", None),
        ("c.jpg", None),
    ]
    assert rows[0]["landmarks"] == [[1.5, 2.5]] * 3 and rows[0]["box"] == [1.0, 2.0, 3.0, 4.0]
    assert rows[2]["error"] == "ImageDecodeError: nope" and rows[2]["landmarks"] is None
    assert rows[3]["pose"]["roll"] == 3.0
    assert not out.with_name(out.name + ".partial").exists()


def test_restart_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    for source in ("a.jpg", "b.jpg"):
        sink = open_sink(out, resume=False)
        sink.write([_row(source)])
        sink.close()
    assert done_sources(out) == {"b.jpg"}


def test_parquet_reads_back_with_pandas(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    out = tmp_path / "r.parquet"
    sink = open_sink(out, resume=False)
    sink.write([_row("a.jpg"), _row("b.jpg", time=0.5, kind="video", frame=3, track=2)])
    sink.close()
    df = pd.read_parquet(out)
    assert list(df.columns) == list(COLUMNS) and len(df) == 2
    assert df.loc[1, "frame"] == 3 and df.loc[1, "track"] == 2


def test_a_torn_jsonl_line_is_dropped_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    sink = open_sink(out, resume=False)
    sink.write([_row("a.jpg")])
    sink.close()
    with out.open("a") as f:
        f.write('{"source": "b.jpg", "kin')  # a run killed mid-line
    assert done_sources(out) == {"a.jpg"}
    sink = open_sink(out, resume=True)
    sink.write([_row("b.jpg")])
    sink.close()
    assert [r["source"] for r in read_rows(out)] == ["a.jpg", "b.jpg"]


def test_unknown_output_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.parquet or \.jsonl"):
        open_sink(tmp_path / "r.csv", resume=False)
