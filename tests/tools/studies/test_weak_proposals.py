"""tools.studies.weak_proposals: SSD's proposals under its threshold and what the second look says."""

from __future__ import annotations

import numpy as np

from runtime.detectors import create_detector
from runtime.detectors.ssd_blazeface import COVERED, SsdBlazeFaceDetector, covered
from tests.runtime.detectors.test_cnn import _face_api_demo, _rgb
from tools.studies.weak_proposals import weak_proposals


def test_weak_proposals_on_a_crowded_photo() -> None:
    """face-api's sample1 (a table of people, glasses and chips): weak proposals exist, none on a kept
    face, some that BlazeFace confirms; the detector's own threshold is back afterwards."""
    image = _rgb(_face_api_demo() / "sample1.jpg")
    detector = create_detector("ssd_blazeface")
    assert isinstance(detector, SsdBlazeFaceDetector)
    kept = detector.detect(image, min_face=40).boxes
    rows = weak_proposals(detector, image, weak=0.05, min_face=40)
    assert detector.ssd.score_threshold == 0.3
    assert rows and all(0.05 <= r["ssd"] < 0.3 for r in rows)
    boxes = np.array([r["box"] for r in rows])
    assert covered(boxes, kept).max() < COVERED
    assert any(r["second_look"] >= 0.5 for r in rows)  # the study's point: the second look passes some
    assert weak_proposals(detector, image, weak=0.3, min_face=40) == []  # nothing between 0.3 and 0.3
