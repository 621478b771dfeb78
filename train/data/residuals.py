"""Stage-1 residuals for training a cascade's second stage on what it sees at inference.

At inference stage 2 crops the image with ``crop_matrix_from_points`` of stage 1's *prediction*.
Training it on crops re-aligned from stage-1 predictions on its own training set shows it
stage-1 errors that are smaller than on unseen faces (stage 1 has fitted those faces). Instead,
stage 1 is run on held-out faces; each face's error is recorded in the stage-2 crop frame of its
ground truth (``model_store.cascade.stage_matrices`` with the stage-2 crop rule), in crop units
(divided by the crop side, so independent of face size and input size). A stage-2 training crop
then re-aligns on ``gt + residual`` with a residual drawn from that bank (optionally mirrored), i.e.
the one stage-2 geometry of ``model_store`` applied to points whose error follows stage 1's
held-out error distribution, shape and correlation between points included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.cascade import stage_matrices
from model_store.geometry import CropRule, apply_affine, invert_affine
from model_store.schemes import Scheme

__all__ = ["ResidualBank", "crop_residuals", "perturb_points"]


def _frames(points: np.ndarray, scheme: Scheme, rule: CropRule) -> np.ndarray:
    """[N, 2, 3] image -> unit-crop (side 1) matrices of the stage-2 rule re-aligned on ``points``."""
    return stage_matrices(1, rule, 1, scheme, previous=np.asarray(points, dtype=np.float64))


def crop_residuals(pred: np.ndarray, gt: np.ndarray, scheme: Scheme, rule: CropRule) -> np.ndarray:
    """``pred - gt`` ``[N, K, 2]`` (image px) as ``[N, K, 2]`` offsets in the stage-2 crop frame of
    ``gt``, in crop units (1 = the crop side)."""
    m = _frames(gt, scheme, rule)
    return np.asarray(
        apply_affine(m, np.asarray(pred, np.float64)) - apply_affine(m, np.asarray(gt, np.float64))
    )


def perturb_points(gt: np.ndarray, residual: np.ndarray, scheme: Scheme, rule: CropRule) -> np.ndarray:
    """``[K, 2]`` image points: ``gt`` moved by a crop-unit ``residual [K, 2]`` in its stage-2 frame
    (the inverse of :func:`crop_residuals`)."""
    m = _frames(np.asarray(gt, np.float64)[None], scheme, rule)[0]
    return np.asarray(apply_affine(invert_affine(m), apply_affine(m, np.asarray(gt, np.float64)) + residual))


@dataclass
class ResidualBank:
    """Held-out stage-1 residuals ``[M, K, 2]`` (crop units, see :func:`crop_residuals`).

    ``mirror``: each draw is mirrored (x -> -x and the scheme's flip permutation) with probability
    0.5, so the bank is left-right symmetric like the flip augmentation.
    """

    residuals: np.ndarray
    scheme: Scheme
    rule: CropRule
    mirror: bool = True

    def __post_init__(self) -> None:
        r = np.asarray(self.residuals, dtype=np.float64)
        if r.ndim != 3 or r.shape[1:] != (self.scheme.num_points, 2) or len(r) == 0:
            raise ValueError(f"residuals must be [M>0, {self.scheme.num_points}, 2], got {r.shape}")
        if not np.isfinite(r).all():
            raise ValueError("residuals must be finite")
        self.residuals = r

    @classmethod
    def from_predictions(
        cls, pred: np.ndarray, gt: np.ndarray, scheme: Scheme, rule: CropRule, *, mirror: bool = True
    ) -> ResidualBank:
        return cls(crop_residuals(pred, gt, scheme, rule), scheme, rule, mirror)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One residual ``[K, 2]`` drawn uniformly from the bank (mirrored half the time if ``mirror``)."""
        r = self.residuals[int(rng.integers(len(self.residuals)))]
        if self.mirror and rng.random() < 0.5:
            r = r[self.scheme.flip_permutation] * np.array([-1.0, 1.0])
        return np.asarray(r)

    def init_points(self, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Stage-1-like points ``[K, 2]`` (image px) for a training face with ground truth ``gt``."""
        return perturb_points(gt, self.draw(rng), self.scheme, self.rule)

    def summary(self) -> dict[str, float]:
        """Bank error size: mean / 90th percentile of the per-face mean point offset (crop units)."""
        per_face = np.linalg.norm(self.residuals, axis=-1).mean(axis=-1)  # (M,)
        return {
            "n": float(len(per_face)),
            "mean": float(per_face.mean()),
            "p90": float(np.percentile(per_face, 90)),
        }

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(Path(path), residuals=self.residuals.astype(np.float32))
