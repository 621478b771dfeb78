"""Running a trained cascade (1 or 2 stages) from image + face box to image-space landmarks.

This mirrors what the service does with the exported ONNX stages: stage 1 crops from the
tight face box with its crop rule; every further stage re-crops the ORIGINAL image with
``crop_matrix_from_points`` of the previous stage's prediction (rotation removed, box
corrected); each stage's crop-unit output is mapped back to image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
    warp_affine,
)
from model_store.preprocess import Normalisation, to_input
from model_store.schemes import Scheme

__all__ = ["Stage", "crop_matrices", "predict_crops", "run_cascade"]


@dataclass
class Stage:
    """One trained stage: the network plus the preprocessing recorded in its checkpoint."""

    model: nn.Module
    crop_rule: CropRule
    normalisation: Normalisation

    @property
    def input_size(self) -> int:
        return int(self.model.input_size)  # type: ignore[arg-type]


@torch.no_grad()
def predict_crops(
    model: nn.Module,
    crops: np.ndarray,
    norm: Normalisation,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``crops [N, S, S, 3]`` (0..255) -> predictions ``[N, K, 2]`` in crop PIXELS (float64)."""
    was_training = model.training
    model.eval()
    size = crops.shape[1]
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.from_numpy(to_input(crops[i : i + batch_size], norm)).to(device)  # (B, 3, S, S)
        y = model(x).float().cpu().numpy()  # (B, 2K) crop units
        out.append(y.reshape(len(y), -1, 2).astype(np.float64) * size)  # (B, K, 2) crop px
    model.train(was_training)
    if not out:
        return np.zeros((0, 0, 2))
    return np.concatenate(out)


def crop_matrices(
    stage_index: int,
    rule: CropRule,
    size: int,
    scheme: Scheme,
    boxes: np.ndarray | None = None,
    previous: np.ndarray | None = None,
) -> np.ndarray:
    """Image -> crop similarities ``[N, 2, 3]`` for a stage: from ``boxes [N, 4]`` for stage 0,
    from the previous stage's image-space points ``[N, K, 2]`` otherwise."""
    if stage_index == 0:
        if boxes is None:
            raise ValueError("stage 1 needs face boxes")
        return np.stack([crop_matrix_from_box(b, size, rule) for b in boxes])
    if previous is None:
        raise ValueError("a later stage needs the previous stage's points")
    return np.stack([crop_matrix_from_points(p, scheme, size, rule) for p in previous])


def run_cascade(
    stages: Sequence[Stage],
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    scheme: Scheme,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Landmarks ``[N, K, 2]`` in image pixels after each stage (one array per stage).

    ``images``: N arrays ``[H, W, 3]`` (uint8 RGB); ``boxes [N, 4]``: tight face boxes (x0, y0, x1, y1).
    """
    results: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for i, stage in enumerate(stages):
        size = stage.input_size
        mats = crop_matrices(i, stage.crop_rule, size, scheme, boxes=boxes, previous=previous)  # (N, 2, 3)
        crops = np.stack([warp_affine(img, m, size) for img, m in zip(images, mats, strict=True)])
        crop_pts = predict_crops(
            stage.model, crops, stage.normalisation, batch_size=batch_size, device=device
        )
        previous = apply_affine(invert_affine(mats), crop_pts)  # (N, K, 2) image px
        results.append(previous)
    return results
