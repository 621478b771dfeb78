"""CI part of issue 20's reliability checks, real uvicorn with the default models: client hang-ups (fewer
than ``make reliability``'s 200) and the odd images. The hostile-request latency run (a 40-megapixel
PNG, 40,000-IFD TIFFs) is in ``make reliability`` only; tests/service covers its parts."""

from __future__ import annotations

from pathlib import Path

from tests.reliability import hostile
from tests.reliability.run import server


def test_hang_ups_add_no_500_and_their_detections_are_skipped(tmp_path: Path) -> None:
    srv = server(tmp_path, {"log_level": "info"})
    try:
        result = hostile.run_disconnects(srv.url, srv.process.pid, srv.logs, n=30)
    finally:
        assert srv.stop() in (0, -15), srv.logs()
    for key in ("mid_upload", "after_body_with_detection"):
        assert result[key]["added_500"] == 0 and result[key]["added_499"] == 30, result
    assert result["after_body_with_detection"]["detections_completed"] <= 5, result
    assert result["tracebacks_in_log"] == 0 and result["disconnect_log_lines"] == 60, result


def test_odd_images_are_read_as_pillow_reads_them(tmp_path: Path) -> None:
    srv = server(tmp_path, {})
    try:
        images = hostile.run_odd_images(srv.url)
    finally:
        assert srv.stop() in (0, -15), srv.logs()
    assert all(r["ok"] for r in images.values()), images
