from __future__ import annotations

import numpy as np
import pytest

from model_store.crop import crop as cut
from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    eye_angle,
    flip_points,
    tight_box,
    warp_affine,
)
from model_store.schemes import AFLW19, IBUG68
from train.data.augment import AugmentConfig, make_crop
from train.data.synthetic import SyntheticFaces
from train.data.types import Sample

GEOMETRIC = AugmentConfig(photometric=False, blur_prob=0.0, occlusion_prob=0.0)


@pytest.fixture(scope="module")
def face() -> Sample:
    return SyntheticFaces("ibug68", num=1, seed=21, image_size=128)[0]


def test_evaluation_crop_is_the_crop_rule(face):
    rule = CropRule(scale=1.3, shift_y=0.05)
    crop, pts = make_crop(face, IBUG68, 64, rule, None, None)
    m = crop_matrix_from_box(face.box, 64, rule)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.float32 and pts.dtype == np.float32
    np.testing.assert_array_equal(crop, cut(face.image, m, 64))  # the crop the service cuts
    np.testing.assert_allclose(crop, warp_affine(face.image, m, 64), atol=4.0)
    np.testing.assert_allclose(pts, apply_affine(m, face.points), atol=1e-4)
    # Tight box + scale 1.3: the points span 1/1.3 of the crop along the longer side.
    span = (pts.max(axis=0) - pts.min(axis=0)).max()
    assert span == pytest.approx(64 / 1.3, rel=1e-4)
    # rng without cfg (or cfg without rng) is still the evaluation crop
    crop2, _ = make_crop(face, IBUG68, 64, rule, np.random.default_rng(0), None)
    np.testing.assert_array_equal(crop, crop2)


@pytest.mark.parametrize("seed", range(8))
def test_points_move_with_the_pixels(seed):
    """A bright dot drawn at a landmark lands on the transformed landmark after augmentation
    (rotation, shift, zoom and, for odd seeds, a mirror with the scheme's permutation)."""
    rng = np.random.default_rng(seed)
    size, k = 160, int(rng.integers(68))
    pts = rng.uniform(40, 120, size=(68, 2)).astype(np.float32)
    # Landmark k on a pixel centre; light that pixel (with a dim halo, so bilinear sampling peaks there).
    pts[k] = np.floor(pts[k]) + 0.5
    img = np.zeros((size, size, 3), np.uint8)
    x, y = int(pts[k, 0]), int(pts[k, 1])
    img[y - 1 : y + 2, x - 1 : x + 2] = 120
    img[y, x] = 255
    sample = Sample(img, pts, tight_box(pts).astype(np.float32), "ibug68", {})
    cfg = AugmentConfig(
        rotation_deg=40, translate=0.15, scale=(0.8, 1.2), flip_prob=float(seed % 2),
        photometric=False, blur_prob=0, occlusion_prob=0,
    )  # fmt: skip
    crop, out = make_crop(sample, IBUG68, 96, CropRule(scale=1.4), rng, cfg)
    grey = crop.mean(axis=2)
    by, bx = np.unravel_index(np.argmax(grey), grey.shape)
    j = int(np.nonzero(IBUG68.flip_permutation == k)[0][0]) if seed % 2 else k
    assert np.hypot(bx + 0.5 - out[j, 0], by + 0.5 - out[j, 1]) < 1.0


def test_mirror_matches_flip_points_and_twice_is_identity(face):
    cfg = AugmentConfig(rotation_deg=0, translate=0, scale=(1, 1), flip_prob=1.0, photometric=False,
                        blur_prob=0, occlusion_prob=0)  # fmt: skip
    rule = CropRule()
    plain, p0 = make_crop(face, IBUG68, 64, rule, None, None)
    mirrored, p1 = make_crop(face, IBUG68, 64, rule, np.random.default_rng(0), cfg)
    np.testing.assert_allclose(mirrored, plain[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(p1, flip_points(p0, 64, IBUG68), atol=1e-4)
    # The subject's right eye stays on the image's left after the mirror (labels follow anatomy).
    assert p1[36:42, 0].mean() < p1[42:48, 0].mean()
    np.testing.assert_allclose(flip_points(flip_points(p0, 64, IBUG68), 64, IBUG68), p0, atol=1e-5)
    np.testing.assert_allclose(flip_points(flip_points(p0[:19], 64, AFLW19), 64, AFLW19), p0[:19], atol=1e-5)


def test_stage_two_crop_from_points_removes_the_tilt():
    ds = SyntheticFaces("aflw19", num=1, seed=2, image_size=128)
    s = ds[0]
    m = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    c = np.array([64.0, 64.0])
    tilted = Sample(s.image, ((s.points - c) @ m.T + c).astype(np.float32), s.box, "aflw19", {})
    _, pts = make_crop(tilted, AFLW19, 128, CropRule(), None, None, init_points=tilted.points)
    assert abs(eye_angle(pts, AFLW19)) < 1e-6
    assert abs(eye_angle(tilted.points, AFLW19)) > 0.1


def test_appearance_augmentation_is_bounded_and_seeded(face):
    cfg = AugmentConfig(blur_prob=1.0, occlusion_prob=1.0)
    a, pa = make_crop(face, IBUG68, 64, CropRule(), np.random.default_rng(3), cfg)
    b, pb = make_crop(face, IBUG68, 64, CropRule(), np.random.default_rng(3), cfg)
    c, _ = make_crop(face, IBUG68, 64, CropRule(), np.random.default_rng(4), cfg)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255 and a.dtype == np.float32


def test_scheme_mismatch_is_an_error(face):
    with pytest.raises(ValueError, match="scheme"):
        make_crop(face, AFLW19, 64, CropRule(), None, None)
