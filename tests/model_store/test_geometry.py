from __future__ import annotations

import math

import numpy as np
import pytest

from model_store.geometry import (
    BoxCalibration,
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    eye_angle,
    flip_box,
    flip_points,
    invert_affine,
    tight_box,
    warp_affine,
)
from model_store.schemes import AFLW19, IBUG68


def _random_face(rng, scheme, centre=(120.0, 100.0), size=80.0, angle=0.0):
    """A plausible point cloud: eyes above the centre, the rest spread in a box."""
    pts = rng.uniform(-0.5, 0.5, (scheme.num_points, 2)) * size
    pts[list(scheme.right_eye)] = [-0.25 * size, -0.15 * size] + rng.normal(0, 1, (len(scheme.right_eye), 2))
    pts[list(scheme.left_eye)] = [0.25 * size, -0.15 * size] + rng.normal(0, 1, (len(scheme.left_eye), 2))
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + np.array(centre)


def test_box_crop_maps_the_square_onto_the_crop():
    m = crop_matrix_from_box(np.array([10.0, 20.0, 110.0, 100.0]), 64, CropRule(scale=1.0))
    # the box is 100 x 80: the square side is 100, centred at (60, 60)
    corners = apply_affine(m, np.array([[10.0, 10.0], [110.0, 110.0], [60.0, 60.0]]))
    np.testing.assert_allclose(corners, [[0, 0], [64, 64], [32, 32]], atol=1e-9)


def test_crop_rule_shift_and_scale():
    rule = CropRule(scale=2.0, shift_x=0.1, shift_y=-0.25)
    m = crop_matrix_from_box(np.array([0.0, 0.0, 40.0, 20.0]), 100, rule)
    # ref 40: side 80, centre (20 + 4, 10 - 10) = (24, 0)
    np.testing.assert_allclose(apply_affine(m, np.array([[24.0, 0.0], [-16.0, -40.0]])), [[50, 50], [0, 0]])


@pytest.mark.parametrize("angle", [0.0, 0.3, -1.1, 2.5])
def test_round_trip_is_exact(angle):
    rng = np.random.default_rng(0)
    m = crop_matrix_from_box(np.array([13.3, 7.1, 91.7, 120.2]), 128, CropRule(1.3, 0.02, 0.1), angle)
    pts = rng.uniform(-50, 300, (500, 2))
    back = apply_affine(invert_affine(m), apply_affine(m, pts))
    assert np.abs(back - pts).max() < 1e-4


def test_batched_affine_matches_single():
    rng = np.random.default_rng(1)
    ms = np.stack(
        [crop_matrix_from_box(np.array([0, 0, 50 + i, 60]), 64, CropRule(), 0.1 * i) for i in range(3)]
    )
    pts = rng.uniform(0, 60, (3, 5, 2))
    batched = apply_affine(ms, pts)
    for i in range(3):
        np.testing.assert_allclose(batched[i], apply_affine(ms[i], pts[i]))
    np.testing.assert_allclose(invert_affine(ms)[1], invert_affine(ms[1]))


def test_warp_follows_the_pixel_centre_convention():
    # One bright pixel at row 30, column 40: its centre is (40.5, 30.5).
    img = np.zeros((64, 80, 3), np.uint8)
    img[30, 40] = 255
    m = crop_matrix_from_box(np.array([20.0, 10.0, 60.0, 50.0]), 40, CropRule(scale=1.0))  # 1:1, offset
    crop = warp_affine(img, m, 40)
    v, u = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    np.testing.assert_allclose(apply_affine(m, np.array([[40.5, 30.5]]))[0], [u + 0.5, v + 0.5])
    assert crop[v, u, 0] == pytest.approx(255.0)
    assert crop.dtype == np.float32 and crop.shape == (40, 40, 3)


def test_warp_identity_and_zero_border():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(warp_affine(img, m, 32), img.astype(np.float32))
    shifted = warp_affine(img, np.array([[1.0, 0, 40], [0, 1.0, 0]]), 32)  # image lands right of the crop
    assert np.all(shifted == 0)


def test_warp_rotation_moves_pixels_with_points():
    img = np.zeros((100, 100), np.float32)
    img[20:23, 70:73] = 1.0  # a small bright square centred at (71.5, 21.5)
    m = crop_matrix_from_box(np.array([20.0, 20.0, 80.0, 80.0]), 60, CropRule(scale=1.2), angle=0.7)
    crop = warp_affine(img, m, 60)
    ys, xs = np.nonzero(crop > 0.5)
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(centroid, apply_affine(m, np.array([[71.5, 21.5]]))[0], atol=0.6)


def test_flip_of_crop_matches_crop_of_flipped_image():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 120, 3)).astype(np.float32)
    box = np.array([30.2, 15.7, 85.1, 80.3])
    size = 48
    m = crop_matrix_from_box(box, size, CropRule(1.2, 0.0, 0.05))
    crop = warp_affine(img, m, size)
    flipped_img = img[:, ::-1]
    m_f = crop_matrix_from_box(flip_box(box, 120), size, CropRule(1.2, 0.0, 0.05))
    crop_of_flip = warp_affine(flipped_img, m_f, size)
    np.testing.assert_allclose(crop_of_flip, crop[:, ::-1], atol=1e-3)


@pytest.mark.parametrize("scheme", [IBUG68, AFLW19], ids=lambda s: s.name)
def test_flip_points_twice_is_identity_and_mirrors(scheme):
    rng = np.random.default_rng(4)
    pts = _random_face(rng, scheme)
    once = flip_points(pts, 200, scheme)
    np.testing.assert_allclose(flip_points(once, 200, scheme), pts)
    np.testing.assert_allclose(once[scheme.flip_permutation, 0], 200 - pts[:, 0])
    # the subject's right eye stays on the image's left after the flip
    assert once[list(scheme.right_eye), 0].mean() < once[list(scheme.left_eye), 0].mean()


@pytest.mark.parametrize("scheme", [IBUG68, AFLW19], ids=lambda s: s.name)
def test_realignment_removes_rotation(scheme):
    rng = np.random.default_rng(5)
    upright = _random_face(rng, scheme, angle=0.0)
    angle = 0.6
    c, s = math.cos(angle), math.sin(angle)
    centre = upright.mean(axis=0)
    tilted = (upright - centre) @ np.array([[c, s], [-s, c]]) + centre
    assert eye_angle(tilted, scheme) == pytest.approx(eye_angle(upright, scheme) + angle, abs=1e-9)
    rule = CropRule(scale=1.1)
    crop_pts = apply_affine(crop_matrix_from_points(tilted, scheme, 128, rule), tilted)
    ref_pts = apply_affine(crop_matrix_from_points(upright, scheme, 128, rule), upright)
    np.testing.assert_allclose(crop_pts, ref_pts, atol=1e-6)
    # the de-rotated eye line is horizontal, and the points fill 1/1.1 of the crop
    assert eye_angle(crop_pts, scheme) == pytest.approx(0.0, abs=1e-9)
    extent = (crop_pts.max(axis=0) - crop_pts.min(axis=0)).max()
    assert extent == pytest.approx(128 / 1.1)


def test_box_calibration_and_tight_box():
    cal = BoxCalibration(dx=0.1, dy=0.2, sw=0.5, sh=2.0)
    out = cal.apply(np.array([[0.0, 0.0, 10.0, 20.0]]))
    np.testing.assert_allclose(out, [[3.5, -6.0, 8.5, 34.0]])
    np.testing.assert_allclose(BoxCalibration().apply(np.array([1.0, 2.0, 3.0, 4.0])), [1, 2, 3, 4])
    np.testing.assert_allclose(tight_box(np.array([[1.0, 5.0], [3.0, -2.0], [2.0, 0.0]])), [1, -2, 3, 5])


def test_degenerate_box_is_refused():
    with pytest.raises(ValueError, match="degenerate"):
        crop_matrix_from_box(np.array([10.0, 10.0, 10.0, 50.0]), 64, CropRule())
