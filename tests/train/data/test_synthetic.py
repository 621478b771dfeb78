from __future__ import annotations

import numpy as np
import pytest

from model_store.geometry import tight_box
from train.data.render import RenderOptions, render_face
from train.data.synthetic import PoseDistribution, SyntheticFaces
from train.data.types import LandmarkDataset

CLEAN = RenderOptions(occlusion_prob=0, glasses_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0, lowres_prob=0)


def test_samples_have_the_contract_types_and_are_deterministic():
    ds = SyntheticFaces("ibug68", num=3, seed=11, image_size=96)
    assert isinstance(ds, LandmarkDataset)
    assert (ds.scheme, ds.name, len(ds)) == ("ibug68", "synthetic-ibug68", 3)
    s2 = ds[2]  # access out of order: sample i depends on (seed, i) only
    s0 = ds[0]
    assert s0.image.shape == (96, 96, 3) and s0.image.dtype == np.uint8
    assert s0.points.shape == (68, 2) and s0.points.dtype == np.float32
    assert s0.box.dtype == np.float32
    np.testing.assert_allclose(s0.box, tight_box(s0.points), atol=1e-4)
    for key in ("yaw", "pitch", "roll"):
        assert isinstance(s0.meta[key], float)
    again = SyntheticFaces("ibug68", num=3, seed=11, image_size=96)
    np.testing.assert_array_equal(again[2].image, s2.image)
    np.testing.assert_array_equal(again[2].points, s2.points)
    other = SyntheticFaces("ibug68", num=3, seed=12, image_size=96)[2]
    assert not np.array_equal(other.points, s2.points)
    assert not np.array_equal(s0.image, s2.image)
    with pytest.raises(IndexError):
        ds[3]
    assert len(ds[0:2]) == 2


def test_aflw19_points_come_from_the_same_3d_face():
    a = SyntheticFaces("aflw19", num=2, seed=5, image_size=96)
    b = SyntheticFaces("ibug68", num=2, seed=5, image_size=96)
    for i in range(2):
        p19, p68 = a[i].points, b[i].points
        assert p19.shape == (19, 2)
        np.testing.assert_array_equal(a[i].image, b[i].image)
        # Single-point correspondences are exact: brows, eye corners, nose wings and tip, mouth corners, chin.
        pairs = {0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 8: 39, 9: 42, 11: 45, 12: 31, 13: 30}
        pairs |= {14: 35, 15: 48, 17: 54, 18: 8}
        for i19, i68 in pairs.items():
            np.testing.assert_allclose(p19[i19], p68[i68], atol=1e-3)
        # Eye centres: projection of the 3-D mean, close to the mean of the projected contour.
        np.testing.assert_allclose(p19[7], p68[36:42].mean(axis=0), atol=0.5)
        np.testing.assert_allclose(p19[10], p68[42:48].mean(axis=0), atol=0.5)


def test_default_pose_distribution_is_imbalanced_with_a_long_yaw_tail():
    dist = PoseDistribution()
    rng = np.random.default_rng(0)
    poses = np.array([dist.sample(rng) for _ in range(4000)])
    yaw = np.abs(poses[:, 0])
    assert yaw.max() <= 90.0 and np.abs(poses[:, 1]).max() <= 40.0
    assert (yaw < 30).mean() > 0.7  # mostly frontal
    assert 0.02 < (yaw > 60).mean() < 0.1  # but a tail of profiles
    assert (yaw > 85).sum() > 0
    flat = PoseDistribution.uniform_yaw()
    uyaw = np.abs(np.array([flat.sample(rng) for _ in range(4000)])[:, 0])
    assert abs((uyaw > 60).mean() - 1 / 3) < 0.04


def test_geometry_only_matches_the_full_render():
    ds = SyntheticFaces("ibug68", num=4, seed=3, image_size=64)
    shapes = ds.shapes()
    for i in range(4):
        np.testing.assert_array_equal(shapes[i], ds[i].points)
    np.testing.assert_allclose(ds.poses()[:, 0], [ds[i].meta["yaw"] for i in range(4)])


def test_cache_round_trip(tmp_path):
    ds = SyntheticFaces("aflw19", num=2, seed=9, image_size=64, cache_dir=tmp_path)
    first = ds[1]
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1
    cached = SyntheticFaces("aflw19", num=2, seed=9, image_size=64, cache_dir=tmp_path)[1]
    np.testing.assert_array_equal(first.image, cached.image)
    np.testing.assert_array_equal(first.points, cached.points)
    assert cached.meta["yaw"] == first.meta["yaw"]


def test_landmarks_sit_on_the_rendered_face():
    """With clean rendering the face is drawn where the landmarks say: each eye (sclera, iris and
    pupil) is a high-contrast patch, the cheek below it is smooth; the frontal face is centred."""
    for seed in range(3):
        face = render_face(np.random.default_rng(seed), 128, 0.0, 0.0, 0.0, CLEAN)
        p = face.points68
        assert (p > 0).all() and (p < 128).all()
        centre = (p.min(axis=0) + p.max(axis=0)) / 2
        assert np.all(np.abs(centre - 64) < 0.2 * 128)
        grey = face.image.astype(np.float64).mean(axis=2)

        def patch_std(pt: np.ndarray, r: int = 2, grey: np.ndarray = grey) -> float:
            x, y = int(pt[0]), int(pt[1])
            return float(grey[y - r : y + r + 1, x - r : x + r + 1].std())

        for eye, corner in ((slice(36, 42), 48), (slice(42, 48), 54)):
            e = p[eye].mean(axis=0)
            cheek = (e + p[corner]) / 2
            assert patch_std(e) > patch_std(cheek) + 8, seed


def test_mirrored_poses_give_mirrored_point_layouts():
    """Yaw +a and -a of the same identity: the landmark layouts are mirror images (scheme permutation)."""
    from model_store.schemes import IBUG68

    p_pos = render_face(np.random.default_rng(4), 128, 40.0, 0.0, 0.0, CLEAN, geometry_only=True).points68
    p_neg = render_face(np.random.default_rng(4), 128, -40.0, 0.0, 0.0, CLEAN, geometry_only=True).points68
    # Identity noise is not symmetric, so compare the centred layouts loosely.
    a = p_pos - p_pos.mean(axis=0)
    b = p_neg[IBUG68.flip_permutation] - p_neg.mean(axis=0)
    b[:, 0] *= -1
    scale = np.linalg.norm(a, axis=1).mean()
    assert np.abs(a - b).mean() < 0.1 * scale
    # The nose tip moves towards the side the face turns to.
    assert p_pos[30, 0] > p_pos[27:31, 0].mean() - 1 and p_pos[30, 0] > (p_pos[0, 0] + p_pos[16, 0]) / 2


@pytest.mark.parametrize("seed", range(6))
def test_drawn_features_are_under_their_landmarks(seed):
    """The renderer's material map (before occluders) agrees with the projected landmarks: eye
    centres on the eye (sclera, iris, pupil or lashes), the upper lip's middle on the lips, the nose
    tip on skin, and every point of a near-frontal face within a pixel of the face."""
    from train.data import render as r

    rng = np.random.default_rng([99, seed])
    yaw, pitch, roll = rng.uniform(-25, 25), rng.uniform(-10, 10), rng.uniform(-20, 20)
    face = render_face(rng, 128, yaw, pitch, roll, CLEAN, keep_materials=True)
    mats = face.materials
    assert mats is not None and mats.shape == (256, 256)

    def mat_at(pt: np.ndarray) -> int:
        return int(mats[int(pt[1] * r.SS), int(pt[0] * r.SS)])

    p = face.points68
    eye_ids = {r.SCLERA_R, r.SCLERA_L, r.IRIS, r.PUPIL, r.LASH}
    for eye in (slice(36, 42), slice(42, 48)):
        assert mat_at(p[eye].mean(axis=0)) in eye_ids
    assert mat_at((p[51] + p[62]) / 2) in {r.LIPS, r.LIPLINE}
    assert mat_at(p[30]) in {r.SKIN, r.NOSTRIL}
    face_ids = set(range(1, 20)) - {r.CLOTH}
    for k, pt in enumerate(p):
        x, y = int(pt[0] * r.SS), int(pt[1] * r.SS)
        window = mats[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        assert face_ids & set(np.unique(window).tolist()), k


def test_jaw_paths_start_at_their_landmark_and_are_convex_weights():
    from train.data.face3d import jaw_paths

    w = jaw_paths()
    assert w.shape[0] == 17
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-9)
    assert (w >= -1e-9).all()
    for j in range(17):
        assert w[j, 0, j] == 1.0  # sample 0 is the landmark itself


def _material_at(materials: np.ndarray, p: np.ndarray) -> int:
    """Material id under image point p (pixel units, corner origin) in the 2x G-buffer."""
    return int(materials[int(p[1] * 2), int(p[0] * 2)])


@pytest.mark.parametrize("yaw", [55.0, -65.0])
def test_contour_jaw_labels_run_along_the_turned_face_outline(yaw):
    """300-W's convention: on a turned face the far side's jaw labels sit on the visible outline (skin just
    inside, no skin just outside), where the renderer's own labels (hidden 3-D points) lie inside the face;
    the near side's labels stay where they are."""
    from train.data.render import SKIN

    rng = np.random.default_rng(21)
    contour = render_face(rng, 192, yaw, 0.0, 0.0, CLEAN, keep_materials=True, jaw="contour")
    surface = render_face(np.random.default_rng(21), 192, yaw, 0.0, 0.0, CLEAN, keep_materials=True)
    np.testing.assert_array_equal(contour.image, surface.image)  # only the labels differ
    assert contour.materials is not None
    far, near = (range(10, 16), range(0, 8)) if yaw > 0 else (range(1, 7), range(9, 17))
    np.testing.assert_array_equal(contour.points68[list(near)], surface.points68[list(near)])
    out = np.array([1.0 if yaw > 0 else -1.0, 0.0])  # outwards on the far side (no roll)
    on_outline = sum(
        _material_at(contour.materials, p - 3 * out) == SKIN
        and _material_at(contour.materials, p + 3 * out) != SKIN
        for p in contour.points68[list(far)]
    )
    inside = sum(_material_at(contour.materials, p + 3 * out) == SKIN for p in surface.points68[list(far)])
    assert on_outline >= 5, on_outline
    assert inside >= 5, inside
    assert ((contour.points68[list(far)] - surface.points68[list(far)]) @ out > 1.0).all()


def test_contour_jaw_changes_little_on_a_frontal_face():
    a = render_face(np.random.default_rng(8), 128, 0.0, 0.0, 0.0, CLEAN, geometry_only=True)
    b = render_face(np.random.default_rng(8), 128, 0.0, 0.0, 0.0, CLEAN, geometry_only=True, jaw="contour")
    assert np.abs(a.points68 - b.points68).max() < 1.0
    np.testing.assert_array_equal(a.points68[17:], b.points68[17:])


def test_contour_jaw_sets_share_the_cached_images(tmp_path):
    pose = PoseDistribution.uniform_yaw()
    surface = SyntheticFaces("ibug68", num=3, seed=4, image_size=64, pose=pose, cache_dir=tmp_path)
    contour = SyntheticFaces(
        "ibug68", num=3, seed=4, image_size=64, pose=pose, cache_dir=tmp_path, jaw="contour"
    )
    assert contour.name == "synthetic-ibug68-contour"
    moved = 0
    for i in range(3):
        a, b = surface[i], contour[i]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_allclose(b.box, tight_box(b.points), atol=1e-4)
        moved += int(np.abs(a.points - b.points).max() > 0.5)
    assert moved >= 1
    assert len(list(tmp_path.rglob("*.npz"))) == 3  # one cache for both conventions
    np.testing.assert_array_equal(contour.shapes(), np.stack([contour[i].points for i in range(3)]))
    spec = {"kind": "synthetic", "num": 3, "seed": 4, "image_size": 64, "jaw": "contour"}
    assert SyntheticFaces.from_spec(spec, "ibug68").jaw == "contour"
    with pytest.raises(ValueError, match="jaw"):
        SyntheticFaces("ibug68", num=1, seed=0, jaw="outline")
