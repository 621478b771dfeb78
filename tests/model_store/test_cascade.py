"""model_store.cascade: stage matrices (crops: test_crop.py; the loop: tests/runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.cascade import stage_matrices
from model_store.geometry import CropRule, crop_matrix_from_box, crop_matrix_from_points
from model_store.schemes import get_scheme

SCHEME = get_scheme("ibug68")
RULE = CropRule(scale=1.25, shift_x=0.0, shift_y=0.05)


def test_stage_matrices_box_for_stage_one_points_for_later_stages() -> None:
    rng = np.random.default_rng(1)
    boxes = np.array([[10.0, 20.0, 90.0, 110.0], [5.0, 5.0, 40.0, 30.0]])
    pts = rng.uniform(20, 80, (2, 68, 2))
    first = stage_matrices(0, RULE, 64, SCHEME, boxes=boxes)
    later = stage_matrices(1, RULE, 128, SCHEME, previous=pts)
    assert first.shape == later.shape == (2, 2, 3)
    for i in range(2):
        np.testing.assert_array_equal(first[i], crop_matrix_from_box(boxes[i], 64, RULE))
        np.testing.assert_array_equal(later[i], crop_matrix_from_points(pts[i], SCHEME, 128, RULE))
    with pytest.raises(ValueError, match="boxes"):
        stage_matrices(0, RULE, 64, SCHEME, previous=pts)
    with pytest.raises(ValueError, match="previous"):
        stage_matrices(1, RULE, 64, SCHEME, boxes=boxes)
