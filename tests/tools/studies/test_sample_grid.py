"""tools.studies.sample_grid's realism proxy: dlib's HOG detector finds frontal synthetic faces with a
box overlapping their landmarks' box."""

from __future__ import annotations

import pytest

from tools.studies.sample_grid import _dlib_detection_rate


def test_dlib_finds_frontal_synthetic_faces() -> None:
    pytest.importorskip("dlib")
    rate = _dlib_detection_rate(8, 3)
    assert rate is not None and rate >= 0.75
