from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_store.geometry import CropRule, apply_affine, tight_box
from model_store.meanshape import MEAN_SHAPE_68
from model_store.preprocess import Normalisation
from model_store.schemes import IBUG68
from train.data.types import Sample
from train.dataset import make_eval_crops
from train.loop import _stage_nme

torch.set_num_threads(1)


def _face(angle_deg: float, centre: tuple[float, float], size: float, seed: int) -> Sample:
    """A 68-point face: the mean shape scaled, rotated and placed in a 160x160 noise image."""
    xy = np.asarray(MEAN_SHAPE_68, dtype=np.float64)[:, :2]
    xy = (xy - xy.mean(axis=0)) / np.ptp(xy, axis=0).max() * size
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = xy @ rot.T + np.asarray(centre)
    img = np.random.default_rng(seed).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    return Sample(img, pts.astype(np.float32), tight_box(pts).astype(np.float32), "ibug68", {"yaw": 0.0})


class _Oracle(torch.nn.Module):
    """Returns preset crop-unit outputs: checks the mapping back to the image, not learning."""

    def __init__(self, out: np.ndarray, input_size: int) -> None:
        super().__init__()
        self.out = torch.from_numpy(out.astype(np.float32))
        self.input_size = input_size
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = self.out[self.calls : self.calls + n]
        self.calls += n
        return y


def test_eval_crops_frame_the_face_and_map_back() -> None:
    samples = [
        _face(a, (80 + d, 75 - d), 60 + 5 * d, i) for i, (a, d) in enumerate([(0, 0), (25, 5), (-40, -8)])
    ]
    rule = CropRule(scale=1.25)
    crops = make_eval_crops(samples, IBUG68, 64, rule)
    assert crops.crops.shape == (3, 64, 64, 3) and crops.crops.dtype == np.float32
    crop_pts = apply_affine(crops.matrices, crops.gt)  # (N, K, 2) crop px
    side = np.ptp(crop_pts, axis=1).max(axis=1)  # tight box side of the face inside the crop
    np.testing.assert_allclose(side, 64 / 1.25, rtol=1e-6)
    np.testing.assert_allclose(crops.to_image(crop_pts), crops.gt, atol=1e-9)
    # inter-ocular normaliser of the scheme
    np.testing.assert_allclose(crops.normaliser, np.linalg.norm(crops.gt[:, 36] - crops.gt[:, 45], axis=1))

    # a perfect network (crop-unit outputs) gives NME 0 through the whole evaluation path ...
    oracle = _Oracle((crop_pts / 64).reshape(3, -1), 64)
    _, nme = _stage_nme(oracle, crops, Normalisation(), 2, torch.device("cpu"))
    np.testing.assert_allclose(nme, 0.0, atol=1e-5)
    # ... and one off by 1 crop pixel in x everywhere gives (1 px in image units) / inter-ocular
    oracle = _Oracle(((crop_pts + [1.0, 0.0]) / 64).reshape(3, -1), 64)
    _, nme = _stage_nme(oracle, crops, Normalisation(), 2, torch.device("cpu"))
    px = 64 / 1.25 / np.ptp(crops.gt, axis=1).max(axis=1)  # crop px per image px
    np.testing.assert_allclose(nme, 1.0 / px / crops.normaliser, rtol=1e-4)


def test_stage2_crops_are_realigned_upright() -> None:
    samples = [_face(a, (80, 80), 64, i) for i, a in enumerate([30.0, -35.0])]
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    crops = make_eval_crops(samples, IBUG68, 128, CropRule(scale=1.25), stage_index=1, previous=gt)
    crop_pts = apply_affine(crops.matrices, gt)
    right = crop_pts[:, 36:42].mean(axis=1)
    left = crop_pts[:, 42:48].mean(axis=1)
    # eye line horizontal after re-alignment, right eye (subject's) on the image left
    np.testing.assert_allclose(right[:, 1], left[:, 1], atol=1e-6)
    assert np.all(right[:, 0] < left[:, 0])
    with pytest.raises(ValueError):
        make_eval_crops(samples, IBUG68, 128, CropRule(), stage_index=1, previous=None)


def test_training_crops_use_the_tight_landmark_box() -> None:
    from train.dataset import CropDataset

    face = _face(0.0, (80, 80), 60, 0)
    face.box = np.array([10.0, 5.0, 150.0, 155.0], dtype=np.float32)  # a loose dataset box (AFLW style)
    ds = CropDataset([face], np.array([0]), IBUG68, 64, CropRule(scale=1.25), Normalisation(), None, seed=0)
    x, y, w = ds[0]  # augment=None: the deterministic crop
    assert w.shape == (68,) and bool((w == 1).all())  # no point_weights in meta: all ones
    assert x.shape == (3, 64, 64) and y.shape == (136,)
    pts = y.numpy().reshape(68, 2) * 64  # crop pixels
    assert float(np.ptp(pts, axis=0).max()) == pytest.approx(64 / 1.25, rel=1e-4)
    np.testing.assert_allclose((pts.min(axis=0) + pts.max(axis=0)) / 2, [32.0, 32.0], atol=1e-3)


def test_training_crops_carry_point_weights_through_the_mirror() -> None:
    from train.data.augment import AugmentConfig
    from train.dataset import CropDataset

    face = _face(0.0, (80, 80), 60, 0)
    weights = np.linspace(0.0, 1.0, 68).astype(np.float32)
    face.meta["point_weights"] = weights

    def geometric_only(flip: float) -> AugmentConfig:
        return AugmentConfig(
            rotation_deg=0.0, translate=0.0, scale=(1.0, 1.0), flip_prob=flip, photometric=False,
            blur_prob=0.0, occlusion_prob=0.0,
        )  # fmt: skip

    always, never = geometric_only(1.0), geometric_only(0.0)
    rule = CropRule(scale=1.25)
    _, _, w_plain = CropDataset([face], np.array([0]), IBUG68, 64, rule, Normalisation(), never, seed=0)[0]
    _, _, w_flip = CropDataset([face], np.array([0]), IBUG68, 64, rule, Normalisation(), always, seed=0)[0]
    np.testing.assert_array_equal(w_plain.numpy(), weights)
    np.testing.assert_array_equal(w_flip.numpy(), weights[IBUG68.flip_permutation])
    assert not np.array_equal(w_flip.numpy(), weights)  # the mirror re-ordered them


def test_face_weights_scale_a_faces_point_weights() -> None:
    from train.dataset import CropDataset

    faces = [_face(0.0, (80, 80), 60, 0), _face(0.0, (80, 80), 60, 1)]
    weights = np.linspace(0.5, 1.0, 68).astype(np.float32)
    faces[0].meta["point_weights"] = weights
    ds = CropDataset(
        faces, np.array([0, 1, 0]), IBUG68, 64, CropRule(scale=1.25), Normalisation(), None, seed=0,
        face_weights=np.array([3.0, 2.0], np.float32),
    )  # fmt: skip
    np.testing.assert_allclose(ds[0][2].numpy(), 3.0 * weights, rtol=1e-6)
    np.testing.assert_allclose(ds[1][2].numpy(), np.full(68, 2.0))
    with pytest.raises(ValueError, match="face_weights"):
        CropDataset(
            faces, np.array([0]), IBUG68, 64, CropRule(), Normalisation(), None, 0, face_weights=np.ones(3)
        )
