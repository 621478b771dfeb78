"""tools.studies.label_convention: errors in the face's frame, split into a shared offset and scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.meanshape import MEAN_SHAPE_68
from tools.studies.label_convention import aligned_errors, convention_table, offset_split


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """``n`` 68-point faces: the mean shape at random sizes, positions and rolls."""
    rng = np.random.default_rng(seed)
    base = np.asarray(MEAN_SHAPE_68, dtype=np.float64)[:, :2]
    base = base - base.mean(axis=0)
    out = []
    for _ in range(n):
        a = rng.uniform(-np.pi / 3, np.pi / 3)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(base @ rot.T * rng.uniform(50, 200) + rng.uniform(0, 300, size=2))
    return np.stack(out)


def _in_image(gt: np.ndarray, offset_in_face: np.ndarray) -> np.ndarray:
    """Predictions off by ``offset_in_face`` ``[68, 2]`` (inter-ocular units, face frame) on every face."""
    pred = np.empty_like(gt)
    for i, g in enumerate(gt):
        eyes = g[42:48].mean(axis=0) - g[36:42].mean(axis=0)
        a = np.arctan2(eyes[1], eyes[0])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pred[i] = g + offset_in_face @ rot.T * np.linalg.norm(g[36] - g[45])
    return pred


def test_a_convention_is_all_offset_whatever_the_faces_size_and_roll() -> None:
    gt = _faces(6)
    offset = np.zeros((68, 2))
    offset[:17] = [0.0, 0.1]  # the jaw 0.1 lower on every face (in the face's frame)
    e = aligned_errors(_in_image(gt, offset), gt)
    np.testing.assert_allclose(e, np.broadcast_to(offset, e.shape), atol=1e-9)
    r = offset_split(e)
    assert r["n"] == 6
    assert r["nme"] == pytest.approx(0.1 * 17 / 68)
    assert r["nme_without_mean_offset"] == pytest.approx(0.0, abs=1e-9)
    assert r["mean_offset"] == pytest.approx(0.1 * 17 / 68)
    assert r["mean_offset_by_region"]["jaw"] == pytest.approx(0.1)
    assert r["mean_offset_by_region"]["eyes"] == pytest.approx(0.0, abs=1e-9)


def test_errors_that_cancel_out_are_all_scatter() -> None:
    """Two faces off by +d and -d: no offset, the NME all scatter."""
    gt = _faces(2, seed=1)
    d = np.full((68, 2), 0.03)
    e = np.concatenate(
        [aligned_errors(_in_image(gt[:1], d), gt[:1]), aligned_errors(_in_image(gt[1:], -d), gt[1:])]
    )
    r = offset_split(e)
    assert r["mean_offset"] == pytest.approx(0.0, abs=1e-9)
    assert r["nme"] == pytest.approx(0.03 * np.sqrt(2))
    assert r["nme_without_mean_offset"] == pytest.approx(r["nme"])
    assert r["offset_from_scatter"] == pytest.approx(0.03)  # its NME over sqrt(2)


def test_two_versions_on_a_few_renders(tmp_path: Path) -> None:
    """The embedded 68-point default and its source beside it on a few renders: their NMEs as served, the
    scatter under the NME, and offsets pointing nearly the same way (4.9.0 is 4.8.0 flip-averaged)."""
    spec = {
        "kind": "synthetic",
        "num": 8,
        "seed": 2,
        "image_size": 256,
        "cache_dir": str(tmp_path),
        "jaw": "contour",
    }
    table = convention_table(spec, ["faceapi-ibug68@4.9.0", "faceapi-ibug68@4.8.0"], None)
    assert table["faces"] == 8 and table["selection"] == "all"
    for r in table["predictors"].values():
        assert 0.005 < r["nme"] < 0.15
        assert r["nme_without_mean_offset"] < r["nme"]
    assert table["offset_cosine"]["faceapi-ibug68@4.9.0 ~ faceapi-ibug68@4.8.0"] > 0.8
