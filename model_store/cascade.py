"""The geometry of a two-stage (or N-stage) cascade, once, in numpy: stage geometry, crop matrices, crops.

Stage 1 crops the face box with its crop rule; every later stage re-crops the ORIGINAL image with
``crop_matrix_from_points`` of the previous stage's image-space prediction (eye-line rotation
removed, box corrected); each stage's crop-unit output ``[N, 2K]`` is mapped back to image pixels.

:class:`CascadeGeometry` holds the steps (:meth:`~CascadeGeometry.matrices`,
:meth:`~CascadeGeometry.inputs`, :meth:`~CascadeGeometry.points`); the one loop that runs them over
the networks is ``runtime.cascade.Cascade``, used by the service, the CLI, evaluation and training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.crop import crop
from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
)
from model_store.preprocess import Normalisation, from_output, to_input
from model_store.schemes import Scheme, get_scheme

__all__ = ["CascadeGeometry", "StageGeometry", "crop", "stage_matrices"]


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


class CascadeGeometry:
    """The stages of one model (geometry only) and the scheme they predict."""

    def __init__(self, stages: Sequence[StageGeometry], scheme: Scheme | str) -> None:
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        self.stages = list(stages)
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme

    @classmethod
    def from_manifest(cls, manifest: Any) -> CascadeGeometry:
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
        """``[N, S, S, 3]`` uint8 crops of N images (one per matrix; :func:`model_store.crop.crop`,
        each written straight into the batch's buffer)."""
        size = self.stages[stage_index].input_size
        out = np.empty((len(mats), size, size, 3), dtype=np.uint8)
        for i, (img, m) in enumerate(zip(images, mats, strict=True)):
            crop(img, m, size, out=out[i])
        return out

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
