"""tools.benchmark's in-process rows on the HD frame, at a tiny configuration (one repeat, 10 ms):
the end-to-end loop with the service's model and precision, crops per stage, the peers end to end."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from model_store.crop import crop_backend
from tools.benchmark.images import BenchImage, hd_frame
from tools.benchmark.inprocess import (
    E2E_BATCH,
    crop_costs,
    dlib_e2e,
    inprocess_rows,
    mediapipe_e2e,
    service_landmarker,
)


@pytest.fixture(scope="module")
def frame() -> BenchImage:
    return hd_frame()


def test_hd_frame_is_made_the_same_way_each_time(frame: BenchImage) -> None:
    data, pixels, box, source = frame
    assert data[:2] == b"\xff\xd8" and pixels.shape == (1080, 1920, 3) and "1920x1080" in source
    again = hd_frame()
    assert again[0] == data and again[2] == box
    x1, y1, x2, y2 = box
    assert 0 < x1 < x2 < 1920 and 0 < y1 < y2 < 1080 and 300 < x2 - x1 < 450  # one face of about 360 px


def test_inprocess_loop_runs_the_services_model_and_finds_the_face(
    frame: BenchImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, box, _ = frame
    monkeypatch.setenv("WINGMARK_PRECISION", "float")
    lm, served = service_landmarker("cnn67-ibug68")
    assert lm.name == "cnn67-ibug68" and served["model"] == f"cnn67-ibug68@{lm.version}"
    assert served["precision"] == "float" and served["threads"] == 0 and served["spinning"] is False
    monkeypatch.setenv("WINGMARK_PRECISION", "int8")
    lm8, served8 = service_landmarker("cnn67-ibug68")
    assert lm8.name == "cnn67-ibug68-int8" and served8["precision"] == "int8"
    faces = lm8.predict(data, [box])
    inside = faces[0].landmarks.mean(axis=0)
    assert box[0] < inside[0] < box[2] and box[1] < inside[1] < box[3]
    out = inprocess_rows(lm8, data, box, repeats=1, min_s=0.01)
    assert set(out["rows"]) == {"batch_1", f"batch_{E2E_BATCH}"}
    assert all(r["median"] > 0 for r in out["rows"].values())
    assert out["faces_per_s"] == max(out["rows"].values(), key=lambda r: r["median"])


def test_crop_costs_per_stage_on_the_reduced_decode(frame: BenchImage) -> None:
    data, _, box, _ = frame
    lm, _ = service_landmarker("cnn67-ibug68")
    out = crop_costs(lm, data, box, repeats=1, min_s=0.01)
    assert out["decoded"] == [960, 540]  # a 360 px face: decoded at 1/2
    assert out["backend"] == crop_backend()
    assert [r["size"] for r in out["stages"]] == lm.cascade.sizes
    for r in out["stages"]:
        assert 0 < r["stage_inputs_ms"]["median"] < 1000 and r["crop_numpy_ms"]["median"] > 0
        assert ("crop_opencv_ms" in r) == (crop_backend() == "opencv")
    assert out["max_stage_inputs_ms"] == max(r["stage_inputs_ms"]["median"] for r in out["stages"])


def test_dlib_end_to_end_counts_the_faces_it_finds(frame: BenchImage) -> None:
    out = dlib_e2e(frame[0], repeats=1, min_s=0.01)
    if not out["available"]:
        pytest.skip(out["note"])
    assert out["faces_found"] == 1 and out["faces_per_s"]["median"] > 0


def _fake_python(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_mediapipe_peer_runs_in_its_own_python_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = np.zeros(10, np.uint8).tobytes()
    monkeypatch.setenv("WINGMARK_MEDIAPIPE_PYTHON", str(tmp_path / "absent"))
    out = mediapipe_e2e(image, 1, 0.01)
    assert not out["available"] and "WINGMARK_MEDIAPIPE_PYTHON" in out["note"]
    ok = _fake_python(tmp_path, """echo '{"images_per_s": [10.0, 14.0], "faces": 1, "model": "fake"}'""")
    monkeypatch.setenv("WINGMARK_MEDIAPIPE_PYTHON", str(ok))
    out = mediapipe_e2e(image, 2, 0.01)
    assert out["available"] and out["faces_per_s"] == {"min": 10.0, "median": 12.0, "max": 14.0}
    assert out["note"].startswith("fake")
    (tmp_path / "bad").mkdir()
    bad = _fake_python(tmp_path / "bad", "echo 'no module named mediapipe' >&2; exit 1")
    monkeypatch.setenv("WINGMARK_MEDIAPIPE_PYTHON", str(bad))
    out = mediapipe_e2e(image, 1, 0.01)
    assert not out["available"] and "no module named mediapipe" in out["note"]
