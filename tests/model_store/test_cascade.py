"""model_store.cascade: the one cascade implementation (geometry and the run over ``run_stage``)."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.cascade import Cascade, StageGeometry, crop, stage_matrices
from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
    similarity,
    warp_affine,
)
from model_store.preprocess import Normalisation
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


def _mean_face() -> np.ndarray:
    """[K, 2] crop units: a face shape with a tilted eye line (so stage 2 must de-rotate)."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([0.5 + 0.3 * np.cos(t), 0.5 + 0.35 * np.sin(t)], axis=1)
    pts[36:42] = [0.35, 0.40]
    pts[42:48] = [0.65, 0.46]  # left eye lower than right: ~11 degrees of roll
    return pts


def test_run_chains_stage_two_on_the_stage_one_points() -> None:
    """Hand-derived: stage 2's crop is crop_matrix_from_points(stage-1 image points); its output maps back."""
    stages = [StageGeometry(64, RULE, Normalisation()), StageGeometry(128, CropRule(), Normalisation())]
    cascade = Cascade(stages, SCHEME)
    face = _mean_face()
    second = face + 0.01  # what the fake stage 2 predicts, crop units
    calls: list[tuple[int, tuple[int, ...]]] = []

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        calls.append((i, x.shape))
        out = face if i == 0 else second
        return np.tile(out.reshape(1, -1), (len(x), 1)).astype(np.float32)

    image = np.random.default_rng(2).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    boxes = np.array([[40.0, 50.0, 140.0, 170.0], [20.0, 10.0, 80.0, 70.0]])
    timings: dict[str, float] = {}
    stage1, final = cascade.run(run_stage, [image, image], boxes, timings=timings)
    assert calls == [(0, (2, 3, 64, 64)), (1, (2, 3, 128, 128))]
    assert set(timings) == {"stage1", "stage2"}
    for i in range(2):
        m1 = crop_matrix_from_box(boxes[i], 64, RULE)
        f32 = face.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(stage1[i], apply_affine(invert_affine(m1), f32 * 64), atol=1e-4)
        m2 = crop_matrix_from_points(stage1[i], SCHEME, 128, CropRule())
        s32 = second.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(final[i], apply_affine(invert_affine(m2), s32 * 128), atol=1e-4)
    assert np.abs(final - stage1).mean() > 1.0  # the second stage changed the answer


def test_run_in_batches_equals_one_call_and_checks_outputs() -> None:
    stages = [StageGeometry(32, RULE, Normalisation()), StageGeometry(48, RULE, Normalisation())]
    cascade = Cascade(stages, SCHEME)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (90, 90, 3), dtype=np.uint8) for _ in range(5)]
    boxes = np.array([[10.0 + i, 12.0, 70.0 + i, 80.0] for i in range(5)])

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:  # depends on the pixels, row by row
        return np.tile(_mean_face().reshape(1, -1), (len(x), 1)) + x.mean(axis=(1, 2, 3))[:, None] * 0.01

    whole = cascade.run(run_stage, images, boxes)
    split = cascade.run(run_stage, images, boxes, batch_size=2)
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    with pytest.raises(RuntimeError, match="rows"):
        cascade.run(lambda i, x: np.zeros((1, 136), np.float32), images, boxes)
    with pytest.raises(RuntimeError, match="non-finite"):
        cascade.run(lambda i, x: np.full((len(x), 136), np.nan, np.float32), images, boxes)
