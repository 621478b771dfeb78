"""The two-stage (or N-stage) cascade, once, in numpy: stage geometry, crop matrices, a run loop.

Stage 1 crops the face box with its crop rule; every later stage re-crops the ORIGINAL image with
``crop_matrix_from_points`` of the previous stage's image-space prediction (eye-line rotation
removed, box corrected); each stage's crop-unit output ``[N, 2K]`` is mapped back to image pixels.

The networks are behind a ``run_stage(stage_index, x [N, 3, S, S] float32) -> [N, 2K]`` callable,
so the service (ONNX Runtime / TensorRT backends), the export evaluation and training (PyTorch
forward passes) all run the same geometry. The service splits a run into its steps
(:meth:`Cascade.matrices`, :meth:`Cascade.inputs`, :meth:`Cascade.points`) to place them on
different threads; :meth:`Cascade.run` composes the same steps in one call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
)
from model_store.preprocess import Normalisation, from_output, to_input
from model_store.schemes import Scheme, get_scheme

__all__ = ["Cascade", "RunStage", "StageGeometry", "crop", "stage_matrices"]

RunStage = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StageGeometry:
    """What a stage needs besides its network: input size ``S``, crop rule, normalisation."""

    input_size: int
    crop_rule: CropRule
    normalisation: Normalisation

    @classmethod
    def from_spec(cls, spec: Any) -> StageGeometry:
        """From a ``model_store.manifest.StageSpec``."""
        return cls(int(spec.input_size), spec.crop_rule.to_rule(), spec.normalisation.to_normalisation())


def stage_matrices(
    stage_index: int,
    rule: CropRule,
    size: int,
    scheme: Scheme,
    *,
    boxes: np.ndarray | None = None,
    previous: np.ndarray | None = None,
    angles: np.ndarray | None = None,
) -> np.ndarray:
    """Image -> crop similarities ``[N, 2, 3]`` of one stage.

    Stage 0 crops ``boxes [N, 4]`` (tight face boxes, image px), rotated by ``angles [N]`` (radians,
    the faces' roll, e.g. from a detector's eye keypoints; None: upright crops); every later stage
    re-aligns on the previous stage's image-space points ``previous [N, K, 2]``.
    """
    if stage_index == 0:
        if boxes is None:
            raise ValueError("stage 1 needs face boxes")
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        a = np.zeros(len(b)) if angles is None else np.asarray(angles, dtype=np.float64).reshape(len(b))
        return np.stack(
            [crop_matrix_from_box(x, size, rule, float(t)) for x, t in zip(b, a, strict=True)]
        ).reshape(-1, 2, 3)
    if previous is None:
        raise ValueError("a later stage needs the previous stage's points")
    p = np.asarray(previous, dtype=np.float64)
    return np.stack([crop_matrix_from_points(x, scheme, size, rule) for x in p]).reshape(-1, 2, 3)


def crop(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``warp_affine(image, m, size)`` (bilinear, zero outside), cut by Pillow from the window it samples.

    Same pixel convention and values as ``geometry.warp_affine`` to float rounding (a one-pixel zero
    border around the window gives its edge behaviour): each channel is resampled as a float32 ("F")
    Pillow image, so nothing is rounded to uint8 and the crops equal those training made and the
    published evaluations used. About 2x faster than warp_affine, and the cost follows the face's
    size, not the image's. image [H, W, 3] uint8, m [2, 3] image -> crop; returns [S, S, 3] float32 (0..255).
    """
    from PIL import Image

    h, w = image.shape[:2]
    inv = invert_affine(m)  # crop -> image
    corners = np.array([[0.0, 0.0], [size, 0.0], [0.0, size], [size, size]])
    src = apply_affine(inv, corners)  # [4, 2] image coordinates of the crop's corners
    x0 = max(0, math.floor(src[:, 0].min()) - 2)
    y0 = max(0, math.floor(src[:, 1].min()) - 2)
    x1 = min(w, math.ceil(src[:, 0].max()) + 2)
    y1 = min(h, math.ceil(src[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the image
        return np.zeros((size, size, 3), dtype=np.float32)
    window = np.zeros((y1 - y0 + 2, x1 - x0 + 2, 3), dtype=np.float32)  # zero border: reads outside are 0
    window[1:-1, 1:-1] = image[y0:y1, x0:x1]
    inv[:, 2] -= (x0 - 1, y0 - 1)  # window coordinates = image - (x0 - 1, y0 - 1)
    data = tuple(inv.reshape(-1))  # Pillow maps output pixel centres through ``data`` (output -> input)
    channels = [
        Image.fromarray(np.ascontiguousarray(window[..., c])).transform(
            (size, size), Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR
        )
        for c in range(3)
    ]
    return np.stack([np.asarray(ch, dtype=np.float32) for ch in channels], axis=-1)


class Cascade:
    """The stages of one model (geometry only) and the scheme they predict."""

    def __init__(self, stages: Sequence[StageGeometry], scheme: Scheme | str) -> None:
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        self.stages = list(stages)
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme

    @classmethod
    def from_manifest(cls, manifest: Any) -> Cascade:
        """From a ``model_store.manifest.Manifest``."""
        return cls([StageGeometry.from_spec(s) for s in manifest.stages], manifest.scheme)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def matrices(
        self,
        stage_index: int,
        *,
        boxes: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        angles: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[N, 2, 3]`` image -> crop matrices of a stage (see :func:`stage_matrices`)."""
        g = self.stages[stage_index]
        return stage_matrices(
            stage_index, g.crop_rule, g.input_size, self.scheme, boxes=boxes, previous=previous, angles=angles
        )

    def crops(self, stage_index: int, images: Sequence[np.ndarray], mats: np.ndarray) -> np.ndarray:
        """``[N, S, S, 3]`` float32 crops (0..255) of N images (one per matrix)."""
        size = self.stages[stage_index].input_size
        if len(mats) == 0:
            return np.zeros((0, size, size, 3), dtype=np.float32)
        return np.stack([crop(img, m, size) for img, m in zip(images, mats, strict=True)])

    def to_input(self, stage_index: int, crops: np.ndarray) -> np.ndarray:
        """``[N, S, S, 3]`` crops -> ``[N, 3, S, S]`` normalised float32 network input."""
        return to_input(crops, self.stages[stage_index].normalisation)

    def inputs(self, stage_index: int, images: Sequence[np.ndarray], mats: np.ndarray) -> np.ndarray:
        """``[N, 3, S, S]`` network input of a stage for N images and their matrices."""
        return self.to_input(stage_index, self.crops(stage_index, images, mats))

    def points(self, stage_index: int, output: np.ndarray, mats: np.ndarray) -> np.ndarray:
        """A stage's ``[N, 2K]`` crop-unit output -> ``[N, K, 2]`` image px (finite, one row per face)."""
        out = np.asarray(output)
        if out.shape[0] != len(mats):
            raise RuntimeError(f"stage {stage_index} returned {out.shape[0]} rows for a batch of {len(mats)}")
        crop_pts = from_output(out, self.scheme.num_points, self.stages[stage_index].input_size)
        if not np.isfinite(crop_pts).all():
            raise RuntimeError(f"stage {stage_index} returned non-finite landmarks")
        return apply_affine(invert_affine(mats), crop_pts)  # (N, K, 2) image px

    def run(
        self,
        run_stage: RunStage,
        images: Sequence[np.ndarray],
        boxes: np.ndarray,
        *,
        batch_size: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[np.ndarray]:
        """Image-space landmarks ``[N, K, 2]`` after each stage (one array per stage).

        ``images``: N ``[H, W, 3]`` uint8 RGB; ``boxes [N, 4]``: tight stage-1 face boxes.
        ``batch_size`` splits each stage's network calls (None: one call per stage). ``timings`` (if
        given) receives the seconds spent inside ``run_stage`` per stage (``"stage1"``, ...).
        """
        results: list[np.ndarray] = []
        previous: np.ndarray | None = None
        n = len(images)
        for i in range(self.num_stages):
            mats = self.matrices(i, boxes=boxes, previous=previous)  # (N, 2, 3)
            x = self.inputs(i, images, mats)  # (N, 3, S, S)
            step = batch_size or max(n, 1)
            started = time.perf_counter()
            outputs = [run_stage(i, x[j : j + step]) for j in range(0, n, step)]  # (B, 2K) crop units
            if timings is not None:
                timings[f"stage{i + 1}"] = timings.get(f"stage{i + 1}", 0.0) + time.perf_counter() - started
            k2 = 2 * self.scheme.num_points
            out = np.concatenate(outputs) if outputs else np.zeros((0, k2), np.float32)
            previous = self.points(i, out, mats)
            results.append(previous)
        return results
