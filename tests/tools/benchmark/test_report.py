"""tools.benchmark's report and plots: ``--from-json`` re-renders the committed docs/benchmarks.json into
exactly the committed docs/benchmarks.md (the headline recomputed from the runs) and both PNG plots."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tools.benchmark.cli import main

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_from_json_reproduces_the_committed_report_and_plots(tmp_path: Path) -> None:
    assert main(["--from-json", str(DOCS / "benchmarks.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks.md").read_text() == (DOCS / "benchmarks.md").read_text()
    for name in ("benchmarks_bare.png", "benchmarks_service.png"):
        with Image.open(tmp_path / "img" / name) as im:
            assert im.format == "PNG" and im.size[0] > 400


def test_the_report_names_the_jpeg_decoder_where_the_run_recorded_it(tmp_path: Path) -> None:
    import json

    from runtime.decode import jpeg_decoder

    stored = json.loads((DOCS / "benchmarks.json").read_text())
    stored["machine"]["jpeg_decoder"] = jpeg_decoder()
    (tmp_path / "b.json").write_text(json.dumps(stored))
    assert main(["--from-json", str(tmp_path / "b.json"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "benchmarks.md").read_text()
    assert f"- JPEG decoding: {jpeg_decoder()} (runtime.decode)\n" in text


def test_the_decode_floor_section_states_the_ceiling_it_leaves(tmp_path: Path, monkeypatch) -> None:
    import json

    from tools.benchmark import report

    monkeypatch.setattr(report, "DECODE_JSON", tmp_path / "missing.json")
    assert report._decode_floor_section() == []
    floor = {
        "image": {"bytes": 452432, "size": [1920, 1080]},
        "machine": {"model_name": "AMD EPYC", "cores": 2, "vector_flags": ["avx2", "avx512_vnni"]},
        "loadavg": [1.0, 1.0, 1.0],
        "repeats": 60,
        "decode_ms_one_core": {
            "simplejpeg 1/1": {"min": 5.1, "median": 5.2},
            "simplejpeg 1/8": {"min": 3.6, "median": 3.7},
        },
        "floor_ms": 3.7,
        "cascade_cpu_ms_per_face": 2.09,
        "ratio_ceiling": 0.361,
        "budget_ms_at_0_6x": 1.393,
        "cascade_faces_per_s": 957.0,
        "cascade_cores": 2,
    }
    (tmp_path / "d.json").write_text(json.dumps(floor))
    monkeypatch.setattr(report, "DECODE_JSON", tmp_path / "d.json")
    text = "\n".join(report._decode_floor_section())
    assert "| simplejpeg 1/8 | 3.6 | 3.7 |" in text
    assert "avx512_vnni" in text and "**3.7 ms**" in text and "**0.361x**" in text and "1.393 ms" in text
