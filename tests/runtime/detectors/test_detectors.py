"""Face detection: dlib's HOG detector on real photographs and the detector-box calibration fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store.geometry import BoxCalibration, tight_box
from runtime.detectors import (
    Detections,
    box_from_dlib_rect,
    box_iou,
    create_detector,
    dlib_rect_from_box,
    fit_box_calibration,
    register_detector,
)
from runtime.detectors.dlib_hog import DlibHogDetector
from tests.service.modelgen import mean_face
from tests.service.photos import FRONTAL, synthetic_faces


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 2)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 1] == pytest.approx(50 / 150)
    assert iou[1, 0] == 0.0


class ShiftedDetector:
    """Fake detector: answers each image's known tight box through the inverse of a calibration."""

    name = "fake"

    def __init__(
        self, boxes: list[np.ndarray], cal: BoxCalibration, miss: frozenset[int] = frozenset()
    ) -> None:
        self.boxes = boxes
        self.cal = cal
        self.miss = miss
        self.calls = 0

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        i = self.calls
        self.calls += 1
        if i in self.miss:
            return Detections(np.zeros((0, 4)), np.zeros(0))
        t = self.boxes[i]
        w, h = (t[2] - t[0]) / self.cal.sw, (t[3] - t[1]) / self.cal.sh
        cx = (t[0] + t[2]) / 2 - self.cal.dx * w
        cy = (t[1] + t[3]) / 2 - self.cal.dy * h
        det = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], [0, 0, 5, 5]])  # plus a stray box
        return Detections(det, np.array([1.0, 0.5]))


def test_fit_box_calibration_recovers_a_known_mapping() -> None:
    rng = np.random.default_rng(0)
    truth = BoxCalibration(dx=0.02, dy=0.15, sw=1.1, sh=1.3)
    points = [mean_face("ibug68") * rng.uniform(80, 200) + rng.uniform(0, 100, 2) for _ in range(12)]
    detector = ShiftedDetector([tight_box(p) for p in points], truth, miss=frozenset({3, 7}))
    report: dict[str, int] = {}
    images = [np.zeros((400, 400, 3), np.uint8)] * len(points)
    fitted = fit_box_calibration(detector, images, points, report=report)
    assert report == {"images": 12, "faces": 12, "matched": 10}
    for key in ("dx", "dy", "sw", "sh"):
        assert getattr(fitted, key) == pytest.approx(getattr(truth, key), abs=1e-9)
    # Applying the fit to a detector box gives back the tight landmark box.
    detector.calls = 0
    assert np.allclose(fitted.apply(detector.detect(images[0]).boxes[0]), tight_box(points[0]))


def test_fit_box_calibration_needs_matches() -> None:
    detector = ShiftedDetector([np.array([0, 0, 1, 1])], BoxCalibration(), miss=frozenset({0}))
    with pytest.raises(ValueError, match="matched 0 faces"):
        fit_box_calibration(detector, [np.zeros((8, 8, 3), np.uint8)], [mean_face("aflw19") * 100])


def test_create_detector() -> None:
    assert create_detector("none") is None
    assert create_detector("dlib_hog").name == "dlib_hog"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        create_detector("haar")


def test_dlib_finds_no_face_in_a_flat_image() -> None:
    det = DlibHogDetector().detect(np.full((240, 320, 3), 128, np.uint8))
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,)


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_dlib_finds_the_face_in_real_photographs(photos: Path) -> None:
    detector = DlibHogDetector(max_side=640)
    for name in FRONTAL:
        image = _load(photos / name)
        det = detector.detect(image)
        assert len(det.boxes) == 1, name
        x1, y1, x2, y2 = det.boxes[0]
        h, w = image.shape[:2]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, name
        assert (x2 - x1) > 0.1 * min(w, h), name  # a face, not a speck


def test_detection_on_a_downscaled_copy_maps_back_to_full_size(photos: Path) -> None:
    image = _load(photos / "cage.jpg")
    small = DlibHogDetector(max_side=4096).detect(image).boxes[0]
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2)))
    # min_face=160 lets a 2x image shrink to 640 px: a 160-px face still covers the 80-px window
    boxes = DlibHogDetector(max_side=640, min_face=160).detect(big).boxes  # on a copy ~0.5x the input
    assert len(boxes) == 1
    assert box_iou(boxes[:1], small[None] * 2)[0, 0] > 0.7


def test_dlib_on_synthetic_faces_and_a_calibration_fitted_on_them() -> None:
    faces = synthetic_faces("ibug68", 8)
    detector = DlibHogDetector()
    found = 0
    for face in faces:
        det = detector.detect(face.image)
        if len(det.boxes):
            found += 1
            assert box_iou(det.boxes[:1], tight_box(face.points)[None])[0, 0] > 0.3
    assert found >= 3, f"dlib found {found}/8 synthetic frontal faces"
    report: dict[str, int] = {}
    cal = fit_box_calibration(detector, [f.image for f in faces], [f.points for f in faces], report=report)
    assert report["matched"] == found
    assert 0.6 < cal.sw < 1.6 and 0.6 < cal.sh < 1.6 and abs(cal.dx) < 0.3 and abs(cal.dy) < 0.3
    # The calibrated detector box is closer to the tight landmark box than the raw one.
    raw, fitted = [], []
    for face in faces:
        det = detector.detect(face.image)
        if len(det.boxes):
            truth = tight_box(face.points)[None]
            raw.append(box_iou(det.boxes[:1], truth)[0, 0])
            fitted.append(box_iou(cal.apply(det.boxes[:1]), truth)[0, 0])
    assert np.mean(fitted) >= np.mean(raw)


def test_working_scale_never_shrinks_the_smallest_face_below_the_window() -> None:
    det = DlibHogDetector(max_side=640, min_face=80)
    assert det.working_scale(500, 400) == 1.0  # small images: native size
    assert det.working_scale(817, 1024) == 1.0  # an 80-px face would fall under the 80-px window
    assert DlibHogDetector(max_side=640, min_face=160).working_scale(1280, 960) == pytest.approx(2.0)
    assert DlibHogDetector(max_side=640, min_face=400).working_scale(1280, 960) == pytest.approx(2.0)
    assert det.working_scale(1280, 960, min_face=240) == pytest.approx(2.0)  # the caller's min_face wins


def test_a_small_face_in_a_small_image_is_found_by_the_upsampled_retry(photos: Path) -> None:
    image = _load(photos / "cage.jpg")
    face = DlibHogDetector().detect(image).boxes[0]
    k = 48 / (face[2] - face[0])  # a face of about 48 px: well under the 80-px window
    small = np.asarray(Image.fromarray(image).resize((round(image.shape[1] * k), round(image.shape[0] * k))))
    assert len(DlibHogDetector(retry_max_side=0).detect(small).boxes) == 0
    boxes = DlibHogDetector().detect(small).boxes
    assert len(boxes) == 1 and box_iou(boxes, face[None] * k)[0, 0] > 0.5


def test_dlib_rectangle_round_trip() -> None:
    """dlib rectangles are inclusive pixel indices; our boxes are corner coordinates (the one +1)."""
    import dlib

    rect = dlib.rectangle(3, 4, 12, 20)  # columns 3..12, rows 4..20 inclusive
    box = box_from_dlib_rect(rect)
    assert box == [3.0, 4.0, 13.0, 21.0]
    back = dlib_rect_from_box(np.array(box))
    assert (back.left(), back.top(), back.right(), back.bottom()) == (3, 4, 12, 20)
    assert back.width() == box[2] - box[0] and back.height() == box[3] - box[1]


def test_dlib_shape_points_are_pixel_centres() -> None:
    """dlib's shape points are pixel indices; ours put that pixel's centre at index + 0.5."""
    import dlib

    from runtime.detectors.base import points_from_dlib_shape

    shape = dlib.full_object_detection(dlib.rectangle(0, 0, 9, 9), [dlib.point(3, 4), dlib.point(0, 7)])
    np.testing.assert_array_equal(points_from_dlib_shape(shape), [[3.5, 4.5], [0.5, 7.5]])


def test_register_detector() -> None:
    """A new detector is one class plus one registry entry; names are not reused."""
    import runtime.detectors as detectors

    @register_detector("test_fixed")
    class Fixed:
        name = "test_fixed"

        def __init__(self, *, side: float = 10.0) -> None:
            self.side = side

        def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
            return Detections(np.array([[0.0, 0.0, self.side, self.side]]), np.array([1.0]))

    try:
        det = create_detector("test_fixed", side=5.0)
        assert det is not None and det.detect(np.zeros((8, 8, 3), np.uint8)).boxes[0, 2] == 5.0
        assert det.detect(np.zeros((8, 8, 3), np.uint8)).keypoints is None
        with pytest.raises(ValueError, match="taken"):
            register_detector("test_fixed")(Fixed)
        with pytest.raises(ValueError, match="taken"):
            register_detector("none")(Fixed)
    finally:
        detectors.DETECTORS.pop("test_fixed", None)
