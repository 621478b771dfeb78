"""``ssd_blazeface``: SSD and BlazeFace proposals, each confirmed by a second BlazeFace look; SSD's int8
file; the JPEG reduction each detector decodes at. Hand-made cases, then the real nets on real photos
(face-api's demo photos from npm, the real-face cache where it exists) and on synthetic turned heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.geometry import BoxCalibration
from runtime.detectors import DETECTORS, box_iou, create_detector
from runtime.detectors.cnn import detector_dir
from runtime.detectors.ssd_blazeface import SsdBlazeFaceDetector, covered, uncalibrate
from tests.runtime.detectors.test_cnn import _face_api_demo, _rgb

# ---- hand-made cases ------------------------------------------------------------------------------


def test_uncalibrate_inverts_a_calibration() -> None:
    cal = BoxCalibration(dx=0.05, dy=-0.1, sw=0.8, sh=1.25)
    boxes = np.array([[10.0, 20.0, 110.0, 100.0], [0.0, 0.0, 4.0, 8.0]])
    np.testing.assert_allclose(uncalibrate(cal.apply(boxes), cal), boxes, atol=1e-12)
    # by hand: a tight box of width 80 came from a detector box of width 100, centre 0.05 * 100 left
    back = uncalibrate(np.array([[25.0, 0.0, 105.0, 50.0]]), cal)
    np.testing.assert_allclose(back[0, [0, 2]], [10.0, 110.0])


def test_covered_is_the_intersection_over_the_smaller_box() -> None:
    big = np.array([[0.0, 0.0, 100.0, 100.0]])
    small = np.array([[10.0, 10.0, 30.0, 30.0], [90.0, 0.0, 110.0, 20.0], [200.0, 0.0, 210.0, 10.0]])
    np.testing.assert_allclose(covered(small, big)[:, 0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(covered(big, small)[0], [1.0, 0.5, 0.0])  # symmetric
    assert box_iou(small[:1], big)[0, 0] == pytest.approx(0.04)  # where IoU says "another box"


def test_decode_reduction_keeps_every_view_at_full_resolution() -> None:
    ssd = create_detector("ssd_mobilenet_v1")
    fused = create_detector("ssd_blazeface")
    hog = create_detector("dlib_hog")
    assert ssd is not None and fused is not None and hog is not None
    # 1920x1080, faces from 80 px: SSD's whole view (1920 px) needs 512 px: 1/2 (1/4 would be 480)
    assert ssd.decode_reduction(1920, 1080, 80) == 2  # type: ignore[attr-defined]
    assert ssd.decode_reduction(4000, 3000, 160) == 4  # type: ignore[attr-defined]
    # faces from 40 px: tiles of 1024 px, still 1/2
    assert ssd.decode_reduction(1920, 1080, 40) == 2  # type: ignore[attr-defined]
    assert ssd.decode_reduction(640, 480, 40) == 1  # type: ignore[attr-defined]
    # the second look wants the smallest face at 40 decoded px
    assert fused.decode_reduction(1920, 1080, 80) == 2  # type: ignore[attr-defined]
    assert fused.decode_reduction(1920, 1080, 40) == 1  # type: ignore[attr-defined]
    assert fused.decode_reduction(4000, 3000, 160) == 4  # type: ignore[attr-defined]
    # HOG's window is 80 px: faces of 80 px need every pixel
    assert hog.decode_reduction(1920, 1080, 80) == 1  # type: ignore[attr-defined]
    assert hog.decode_reduction(2560, 1440, 160) == 2  # type: ignore[attr-defined]


def test_bad_options_are_refused() -> None:
    assert "ssd_blazeface" in DETECTORS
    with pytest.raises(ValueError, match="confirm_score"):
        create_detector("ssd_blazeface", confirm_score=1.5)
    with pytest.raises(ValueError, match="look"):
        create_detector("ssd_blazeface", look=0.5)


# ---- the real nets --------------------------------------------------------------------------------


def test_int8_file_is_recorded_and_finds_the_float_nets_faces() -> None:
    folder = detector_dir() / "ssd_mobilenet_v1"
    record = json.loads((folder / "source.json").read_text())["int8"]
    from train.export.detectors import sha256_file

    assert sha256_file(folder / record["onnx"]) == record["onnx_sha256"]
    assert record["check"]["faces_int8_same"] == record["check"]["faces_float"] > 0
    demo = _face_api_demo()
    a, b = create_detector("ssd_mobilenet_v1"), create_detector("ssd_mobilenet_v1", int8=True)
    assert a is not None and b is not None
    for k in range(1, 7):
        img = _rgb(demo / f"sample{k}.jpg")
        fa, fb = a.detect(img), b.detect(img)
        assert len(fa.boxes) == len(fb.boxes) > 0
        assert box_iou(fa.boxes, fb.boxes).max(axis=1).min() > 0.8


def test_demo_photo_faces_are_found_with_their_eyes() -> None:
    img = _rgb(_face_api_demo() / "sample1.jpg")
    det = SsdBlazeFaceDetector()
    faces = det.detect(img)
    assert len(faces.boxes) == 3 and faces.keypoints is not None and faces.keypoints.shape == (3, 6, 2)
    ssd = create_detector("ssd_mobilenet_v1", int8=True)
    assert ssd is not None
    assert box_iou(faces.boxes, ssd.detect(img).boxes).max(axis=1).min() > 0.99  # SSD's boxes, as they are
    for box, kp in zip(faces.boxes, faces.keypoints, strict=True):  # the eyes lie inside the upper box
        assert np.all((kp[:2, 0] > box[0]) & (kp[:2, 0] < box[2]) & (kp[:2, 1] > box[1]))
        assert np.all(kp[:2, 1] < (box[1] + box[3]) / 2 + 0.1 * (box[3] - box[1]))
    assert det.source["licence"] == "MIT + Apache-2.0"
    assert det.calibration("ibug68") == ssd.calibration("ibug68")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def real_cache() -> Path:
    from tools.studies.real_bench import default_cache

    root = default_cache()
    if not (root / "manifest.json").is_file():
        pytest.skip(f"no real-face cache at {root} (wingmark data real; or set WINGMARK_REAL_CACHE)")
    return root


@pytest.mark.parametrize(
    ("photo", "thing"),
    [
        ("images/insightface/t1.jpg", [180, 616, 245, 703]),  # a glass of whisky, SSD 0.37
        ("images/matplotlib/grace_hopper.jpg", [227, 22, 280, 83]),  # the cap badge, SSD 0.34
    ],
)
def test_the_second_look_drops_what_ssd_alone_takes_for_a_face(
    real_cache: Path, photo: str, thing: list[float]
) -> None:
    img = _rgb(real_cache / photo)
    ssd = create_detector("ssd_mobilenet_v1")
    fused = SsdBlazeFaceDetector(int8=False)  # the float SSD saw these two
    assert ssd is not None
    alone, both = ssd.detect(img, min_face=40), fused.detect(img, min_face=40)
    assert box_iou(np.array([thing]), alone.boxes).max() > 0.7
    assert len(both.boxes) == 0 or box_iou(np.array([thing]), both.boxes).max() < 0.3
    faces = alone.boxes[box_iou(alone.boxes, np.array([thing]))[:, 0] < 0.3]  # the real faces stay
    assert len(faces) >= 1 and box_iou(faces, both.boxes).max(axis=1).min() > 0.99


def test_turned_heads_are_found_where_ssd_alone_misses_them() -> None:
    """Synthetic heads (exact labels) at |yaw| 50-75 degrees, faces 20-28 % of a 384-px image."""
    from model_store.geometry import tight_box
    from tools.studies.detect_bench_core import SYNTHETIC_FACE_FRACTION, match_faces
    from train.data.render import RenderOptions
    from train.data.synthetic import PoseDistribution, SyntheticFaces

    faces = SyntheticFaces(
        "ibug68",
        80,
        11,
        image_size=384,
        pose=PoseDistribution.uniform_yaw(90.0),
        options=RenderOptions(face_fraction=SYNTHETIC_FACE_FRACTION),
    )
    fused, ssd = SsdBlazeFaceDetector(), create_detector("ssd_mobilenet_v1")
    assert ssd is not None
    found = {"fused": 0, "ssd": 0}
    n = 0
    for i in range(len(faces)):
        s = faces[i]
        if not 50.0 <= abs(float(s.meta["yaw"])) <= 75.0:
            continue
        n += 1
        truth = tight_box(np.asarray(s.points, dtype=np.float64))[None]
        found["fused"] += int(match_faces(fused.detect(s.image, min_face=40).boxes, truth)[0] >= 0)
        found["ssd"] += int(match_faces(ssd.detect(s.image, min_face=40).boxes, truth)[0] >= 0)
    assert n >= 10
    assert found["fused"] >= 0.9 * n and found["fused"] > found["ssd"], (found, n)
