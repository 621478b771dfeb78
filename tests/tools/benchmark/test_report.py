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
