"""The one stage loop: a model's cascade geometry (``model_store.cascade``) over its networks.

The networks are behind ``run_stage(stage_index, x [N, 3, S, S] float32) -> [N, 2K]`` (a backend's
``run``, an ONNX Runtime session, a TensorRT engine, a PyTorch forward pass), so the service, the
CLI, evaluation and training all run the same loop:

    stage 1: crop the tight face boxes -> network -> points in image pixels
    stage k: re-crop the ORIGINAL image from stage k-1's points -> network -> points

:meth:`Cascade.run` is that loop. The service runs the same steps one stage at a time so that its
batcher can gather several requests' crops into one network call: :meth:`Cascade.stage_inputs`
(crops, off the device thread), ``run_stage`` (batched, on the device thread) and
:meth:`Cascade.points` (map back); or, with the pipeline off, :meth:`Cascade.prepare` and
:meth:`Cascade.run_batch` (the whole loop on one batch of faces).

Shifted views (``views``, :data:`VIEWS`; 1 by default): the last stage of a cascade of two or more
stages crops each face ``views`` times, its re-alignment points moved by :func:`view_offsets` (a
fraction of the face's size), and returns the mean of the mapped-back points. Its crops are made by
:meth:`Cascade.stage_inputs` and averaged by :meth:`Cascade.points`, so a batcher between the two
sees ``views`` crops per face and nothing else changes. It buys accuracy with that stage's work
(docs/models.md, "Shifted views"). ``views`` is the cascade's own count; every step also takes a
call's own (``views=``), so one service can answer requests asking for different counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.cascade import CascadeGeometry
from model_store.schemes import Scheme

__all__ = ["VIEWS", "VIEW_SHIFT", "Cascade", "FaceJob", "RunStage", "view_offsets"]

RunStage = Callable[[int, np.ndarray], np.ndarray]

VIEWS = (1, 5, 9)  # the crop alone; and 4 shifts along the axes; and 4 diagonal shifts more
VIEW_SHIFT = 0.04  # a shifted view's move, as a fraction of the face size (chosen on synthetic validation)


def view_offsets(views: int) -> np.ndarray:
    """The last stage's views: ``[views, 2]`` moves of the re-alignment points (x, y), as fractions of
    each face's size (sqrt of its points' tight box area); the first is the crop itself."""
    if views not in VIEWS:
        raise ValueError(f"views: one of {list(VIEWS)}, not {views!r}")
    d = np.sqrt(0.5)
    unit = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [d, d], [-d, -d], [d, -d], [-d, d]])
    return unit[:views] * VIEW_SHIFT


@dataclass(frozen=True, eq=False)
class FaceJob:
    """One face's stage-1 input, made ahead of the network call (:meth:`Cascade.prepare`)."""

    image: np.ndarray  # [H, W, 3] uint8, the image the face is in (shared by the faces of one image)
    matrix: np.ndarray  # [2, 3] image -> stage-1 crop
    crop: np.ndarray  # [S, S, 3] uint8 stage-1 crop
    views: int | None = None  # its last stage's views (None: the cascade's own)


class Cascade:
    """A model's stages (geometry) and the callable that runs their networks."""

    def __init__(self, geometry: CascadeGeometry, run_stage: RunStage, views: int = 1) -> None:
        self.geometry = geometry
        self.run_stage = run_stage
        # a one-stage model has no re-aligned stage to view: it runs its crop alone
        self.offsets = view_offsets(views if geometry.num_stages > 1 else 1)

    @classmethod
    def from_manifest(cls, manifest: Any, run_stage: RunStage, views: int = 1) -> Cascade:
        """From a ``model_store.manifest.Manifest`` and a stage runner (e.g. ``backend.run``)."""
        return cls(CascadeGeometry.from_manifest(manifest), run_stage, views)

    @property
    def views(self) -> int:
        """Crops per face at the last stage (1 for a one-stage model whatever was asked)."""
        return len(self.offsets)

    def views_for(self, views: int | None = None) -> int:
        """Crops per face at the last stage for a call asking ``views`` (None: :attr:`views`; one of
        :data:`VIEWS`, else ValueError); 1 for a one-stage model whatever was asked."""
        asked = self.views if views is None else views
        view_offsets(asked)
        return asked if self.num_stages > 1 else 1

    def viewed(self, stage: int, views: int | None = None) -> bool:
        """Whether ``stage`` (0-based) crops each face more than once (:meth:`views_for`)."""
        return stage == self.num_stages - 1 and self.views_for(views) > 1

    @property
    def scheme(self) -> Scheme:
        return self.geometry.scheme

    @property
    def num_stages(self) -> int:
        return self.geometry.num_stages

    @property
    def sizes(self) -> list[int]:
        """Each stage's input size S."""
        return [g.input_size for g in self.geometry.stages]

    # -- the loop ------------------------------------------------------------------------------------
    def run(
        self,
        images: Sequence[np.ndarray],
        boxes: np.ndarray | None = None,
        *,
        first: tuple[np.ndarray, np.ndarray] | None = None,
        angles: np.ndarray | None = None,
        batch_size: int | None = None,
        timings: dict[str, float] | None = None,
        views: int | None = None,
    ) -> list[np.ndarray]:
        """Image-space landmarks ``[N, K, 2]`` after each stage (one array per stage).

        ``images``: N ``[H, W, 3]`` uint8 RGB (one per face); ``boxes [N, 4]``: tight stage-1 face
        boxes in the pixels of ``images``, or ``first``: stage 1's matrices ``[N, 2, 3]`` and network
        input ``[N, 3, S, S]`` already made. ``angles [N]`` (radians, or None: upright) turn stage 1's
        crops by each face's roll (e.g. from a detector's eye keypoints). ``batch_size``: crops per network
        call (None: one call per stage; a viewed stage has ``views`` crops per face). ``timings`` (if
        given) receives the seconds spent in ``run_stage`` per stage (``"stage1"``, ...). ``views``: the
        last stage's (:meth:`views_for`).
        """
        g = self.geometry
        results: list[np.ndarray] = []
        previous: np.ndarray | None = None
        for i in range(g.num_stages):
            if i == 0 and first is not None:
                mats, x = first
            else:
                crops = self.views_for(views) if self.viewed(i, views) else 1
                moved = self._spread(i, previous, views)
                mats = g.matrices(i, boxes=boxes, previous=moved, angles=angles if i == 0 else None)
                x = g.inputs(i, [im for im in images for _ in range(crops)], mats)  # (N * crops, 3, S, S)
            step = batch_size or max(len(x), 1)
            started = time.perf_counter()
            outputs = [self.run_stage(i, x[j : j + step]) for j in range(0, len(x), step)]  # (B, 2K)
            if timings is not None:
                timings[f"stage{i + 1}"] = timings.get(f"stage{i + 1}", 0.0) + time.perf_counter() - started
            out = np.concatenate(outputs) if outputs else np.zeros((0, 2 * g.scheme.num_points), np.float32)
            previous = self.points(i, out, mats, views)  # (N, K, 2) image px
            results.append(previous)
        return results

    # -- one stage at a time (the service's batcher runs ``run_stage`` between these) -----------------
    def stage_inputs(
        self,
        stage: int,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        angles: np.ndarray | None = None,
        views: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One image's faces for ``stage``: matrices [N, 2, 3] and network input [N, 3, S, S], or
        N * views of each where the stage is :meth:`viewed` (``angles [N]``: stage 1's roll per face,
        radians)."""
        g = self.geometry
        mats = g.matrices(stage, boxes=boxes, previous=self._spread(stage, previous, views), angles=angles)
        return mats, g.inputs(stage, [image] * len(mats), mats)

    def points(
        self, stage: int, output: np.ndarray, mats: np.ndarray, views: int | None = None
    ) -> np.ndarray:
        """``stage``'s network output [N * views, 2K] -> landmarks [N, K, 2] in image pixels (the mean of
        each face's views where the stage is :meth:`viewed`; :meth:`stage_inputs` made them in order)."""
        pts = self.geometry.points(stage, output, mats)
        if not self.viewed(stage, views):
            return pts
        return pts.reshape(-1, self.views_for(views), *pts.shape[1:]).mean(axis=1)

    def _spread(self, stage: int, previous: np.ndarray | None, views: int | None = None) -> np.ndarray | None:
        """The previous stage's points [N, K, 2] -> [N * views, K, 2], each face's views together, each moved
        by :func:`view_offsets` times the face's size, where ``stage`` is :meth:`viewed`; else unchanged."""
        if previous is None or not self.viewed(stage, views):
            return previous
        offsets = view_offsets(self.views_for(views))
        p = np.asarray(previous, dtype=np.float64)
        size = np.sqrt(np.prod(p.max(axis=1) - p.min(axis=1), axis=1))  # (N,)
        moved = p[:, None] + offsets[None, :, None, :] * size[:, None, None, None]  # (N, V, K, 2)
        return moved.reshape(-1, *p.shape[1:])

    def prepare(
        self,
        image: np.ndarray,
        tight_boxes: np.ndarray,
        angles: np.ndarray | None = None,
        views: int | None = None,
    ) -> list[FaceJob]:
        """image [H, W, 3] uint8, tight_boxes [N, 4] (image pixels), roll angles [N] or None -> N jobs
        (``views``: their last stage's, :meth:`views_for`)."""
        if views is not None:
            self.views_for(views)  # refused here, not in the batch it would fail with others
        g = self.geometry
        boxes = np.asarray(tight_boxes, dtype=np.float64).reshape(-1, 4)
        mats = g.matrices(0, boxes=boxes, angles=angles)  # (N, 2, 3)
        crops = g.crops(0, [image] * len(mats), mats)  # (N, S, S, 3)
        return [FaceJob(image=image, matrix=m, crop=c, views=views) for m, c in zip(mats, crops, strict=True)]

    def run_batch(self, jobs: Sequence[FaceJob]) -> list[np.ndarray]:
        """:meth:`run` on a batch of prepared faces (from any images): N jobs -> N arrays [K, 2] (one
        :meth:`run` per views count among the jobs, in the jobs' order)."""
        groups: dict[int | None, list[int]] = {}
        for k, job in enumerate(jobs):
            groups.setdefault(job.views, []).append(k)
        out: list[np.ndarray] = [np.zeros(0)] * len(jobs)
        for views, at in groups.items():
            mats = np.stack([jobs[k].matrix for k in at])  # (n, 2, 3)
            x = self.geometry.to_input(0, np.stack([jobs[k].crop for k in at]))  # (n, 3, S, S)
            points = self.run([jobs[k].image for k in at], first=(mats, x), views=views)[-1]
            for k, p in zip(at, points, strict=True):
                out[k] = p
        return out
