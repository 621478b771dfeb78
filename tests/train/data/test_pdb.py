from __future__ import annotations

import numpy as np
import pytest

from train.data.pdb import pdb_indices, pose_histogram, pose_projection, procrustes_align
from train.data.synthetic import PoseDistribution, SyntheticFaces


def _similar(shape: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.asarray(scale * shape @ r.T + np.array(shift))


def test_procrustes_removes_translation_scale_and_rotation():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(68, 2))
    others = rng.normal(size=(5, 68, 2)) * 0.1 + base
    moved = np.stack([_similar(s, rng.uniform(-1, 1), rng.uniform(0.5, 3), (5.0, -2.0)) for s in others])
    a = procrustes_align(np.concatenate([others, moved]))
    assert a.shape == (10, 68, 2)
    np.testing.assert_allclose(a[:5], a[5:], atol=1e-6)
    np.testing.assert_allclose(a.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(a.reshape(10, -1), axis=1), 1.0)
    # A mirror image is not a rotation: it must not be aligned onto the original.
    mirrored = others[:1] * np.array([-1.0, 1.0])
    b = procrustes_align(np.concatenate([others[:1], mirrored]))
    assert np.abs(b[0] - b[1]).max() > 0.05


@pytest.fixture(scope="module")
def skewed() -> tuple[np.ndarray, np.ndarray]:
    pose = PoseDistribution(yaw_std=15.0, yaw_tail=0.08, yaw_max=80.0)
    ds = SyntheticFaces("ibug68", num=300, seed=7, image_size=128, pose=pose)
    return ds.shapes(), ds.poses()[:, 0]


def test_first_component_tracks_yaw(skewed):
    shapes, yaw = skewed
    proj = pose_projection(shapes)
    assert proj.shape == (300,)
    assert abs(np.corrcoef(proj, yaw)[0, 1]) > 0.9
    # Projection is invariant to image-plane similarity transforms of the shapes.
    moved = np.stack([_similar(s, 0.3, 1.7, (10.0, 3.0)) for s in shapes])
    np.testing.assert_allclose(np.abs(pose_projection(moved)), np.abs(proj), atol=1e-6)


def test_pdb_flattens_the_histogram(skewed):
    shapes, _ = skewed
    bins, counts = pose_histogram(pose_projection(shapes), 9)
    nonempty = counts[counts > 0]
    assert nonempty.max() / nonempty.min() > 5  # the skew PDB has to fix
    idx = pdb_indices(shapes, 9, np.random.default_rng(0))
    assert set(idx.tolist()) == set(range(len(shapes)))  # nothing dropped
    after = np.bincount(bins[idx], minlength=9)
    assert (after[counts > 0] == counts.max()).all()
    assert (after[counts == 0] == 0).all()
    # Duplicates spread over the members of a sparse bin rather than repeating one sample.
    sparse = int(np.argmin(np.where(counts > 0, counts, np.inf)))
    members = np.nonzero(bins == sparse)[0]
    reps = np.bincount(idx, minlength=len(shapes))[members]
    assert reps.max() - reps.min() <= 1
    capped = pdb_indices(shapes, 9, np.random.default_rng(0), max_factor=3.0)
    assert len(shapes) < len(capped) < len(idx)
    assert (np.bincount(bins[capped], minlength=9) <= 3 * counts).all()


def test_degenerate_inputs():
    rng = np.random.default_rng(0)
    assert pdb_indices(np.zeros((0, 68, 2)), 9, rng).shape == (0,)
    one = rng.normal(size=(1, 68, 2))
    np.testing.assert_array_equal(pdb_indices(one, 9, rng), [0])
    bins, counts = pose_histogram(np.zeros(5), 4)
    assert bins.tolist() == [0] * 5 and counts.tolist() == [5, 0, 0, 0]
    with pytest.raises(ValueError):
        pose_histogram(np.zeros(5), 0)
    with pytest.raises(ValueError):
        procrustes_align(np.zeros((3, 68)))
