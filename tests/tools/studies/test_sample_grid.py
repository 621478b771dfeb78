"""tools.studies.sample_grid's realism proxy: dlib's HOG detector finds frontal synthetic faces with a
box overlapping their landmarks' box."""

from __future__ import annotations

import pytest

from tools.studies.sample_grid import _dlib_detection_rate


def test_dlib_finds_frontal_synthetic_faces() -> None:
    pytest.importorskip("dlib")
    assert _dlib_detection_rate(8, 3) >= 0.75
