"""model_store.cascade: the cascade geometry (stage matrices, crops); the loop is tested in tests/runtime."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.cascade import crop, stage_matrices
from model_store.geometry import (
    CropRule,
    crop_matrix_from_box,
    crop_matrix_from_points,
    similarity,
    warp_affine,
)
from model_store.schemes import get_scheme

SCHEME = get_scheme("ibug68")
RULE = CropRule(scale=1.25, shift_x=0.0, shift_y=0.05)


@pytest.mark.parametrize(
    ("centre", "side", "angle"),
    [
        ((60.0, 50.0), 40.0, 0.0),
        ((10.0, 5.0), 70.0, 0.4),
        ((118.0, 90.0), 33.3, -1.2),
        ((400.0, 400.0), 20.0, 0.0),
    ],
    ids=["inside", "top-left-corner", "bottom-right-rotated", "outside"],
)
def test_crop_matches_warp_affine(centre: tuple[float, float], side: float, angle: float) -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    m = similarity(centre, side, 48, angle)
    expected = warp_affine(image, m, 48)
    got = crop(image, m, 48)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-3)  # float32 resampling: warp_affine's values


def test_crop_of_a_strided_or_grey_image_matches_warp_affine() -> None:
    image = np.random.default_rng(3).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    m = similarity((60.0, 45.0), 50.0, 32, 0.3)
    np.testing.assert_allclose(crop(image[:, ::-1], m, 32), warp_affine(image[:, ::-1], m, 32), atol=1e-3)
    grey = image[..., 1]
    got = crop(grey, m, 32)
    assert got.shape == (32, 32)
    np.testing.assert_allclose(got, warp_affine(grey, m, 32), atol=1e-3)


def test_crop_cost_follows_the_crop_not_the_window() -> None:
    """A whole-image box on a large image: the crop reads 4 * S * S pixels and allocates crop-sized
    arrays, never a copy of the window (a float32 window of this image would be 190 MB)."""
    import tracemalloc

    image = np.zeros((4000, 4000, 3), dtype=np.uint8)
    image[::7] = 200
    whole = crop_matrix_from_box(np.array([0.0, 0.0, 4000.0, 4000.0]), 64, RULE)
    tracemalloc.start()
    try:
        got = crop(image, whole, 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak
    np.testing.assert_allclose(got, warp_affine(image, whole, 64), atol=1e-3)


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
