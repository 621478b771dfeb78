"""Running a trained cascade (1 or 2 stages) from image + face box to image-space landmarks.

The geometry (stage-1 crop from the tight face box, later stages re-cropped from the previous
stage's prediction, outputs mapped back to image pixels) is ``model_store.cascade`` and the stage
loop ``runtime.cascade.Cascade``, the code the service runs on the exported ONNX stages; here its
``run_stage`` is a PyTorch forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_store.cascade import CascadeGeometry, StageGeometry
from model_store.geometry import CropRule
from model_store.preprocess import Normalisation, to_input
from model_store.schemes import Scheme
from runtime.cascade import Cascade

__all__ = ["Stage", "predict_crops", "run_cascade"]


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
    geometry = CascadeGeometry(
        [StageGeometry(s.input_size, s.crop_rule, s.normalisation) for s in stages], scheme
    )

    @torch.no_grad()
    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        model = stages[i].model
        was_training = model.training
        model.eval()
        y = model(torch.from_numpy(x).to(device)).float().cpu().numpy()  # (B, 2K) crop units
        model.train(was_training)
        return np.asarray(y)

    return Cascade(geometry, run_stage).run(images, boxes, batch_size=batch_size)
