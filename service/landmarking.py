"""One landmark request, independent of HTTP: decode -> faces -> batcher(s) -> cascade -> result.

Every step is the runtime's (:class:`runtime.Landmarker`); what this module adds is serving: the
thread pools each step runs in, one deadline over all of them, box checks that answer 4xx, the
batchers that gather several requests' crops into one network call on the device thread, metrics
and timings. The FastAPI route (and nothing else) calls :meth:`LandmarkService.predict`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from runtime import (
    Cascade,
    DecodeDeferredError,
    DecodedImage,
    ImageDecodeError,
    ImageTooLargeError,
    InvalidBoxesError,
    check_boxes,
    decode_image,
)
from runtime.cascade import VIEWS
from runtime.landmarker import REFINE
from runtime.poses import face_poses
from service.batcher import BatcherClosedError, DeadlineExceededError, DynamicBatcher, Outcome, QueueFullError
from service.errors import ProblemError
from service.limits import in_turns
from service.models import LoadedModel, ModelHost
from service.schemas import LandmarkResult
from service.waiting import wait_within

__all__ = ["MIN_DEADLINE_MS", "LandmarkRequest", "LandmarkService"]

log = logging.getLogger("wingmark.service")
MIN_DEADLINE_MS = 10.0  # a request's own deadline_ms below this could never be met: 422, not a 504
T = TypeVar("T")


@dataclass
class LandmarkRequest:
    """A parsed request (service.routes builds it from multipart, JSON or a raw image body)."""

    data: bytes
    model: str | None = None
    scheme: str | None = None
    boxes: list[list[float]] | None = None
    max_faces: int | None = None
    deadline_ms: float | None = None
    pose: bool = False
    views: int | None = None  # the last stage's crops per face (None: the service's WINGMARK_VIEWS)
    refine: str | None = None  # which faces get the second pass (None: the service's WINGMARK_REFINE)


def _stage_turn(
    cascade: Cascade, stage: int, pixels: np.ndarray, views: int | None, part: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One turn of a request's crops for ``stage``: ``part`` holds face boxes with their roll [5]
    (stage 0, :func:`_seeds`) or the previous stage's points [K, 2]; -> matrices [n, 2, 3] and
    network input [n, 3, S, S] (n * views of each at a viewed last stage)."""
    if stage == 0:
        seeds = np.asarray(part, dtype=np.float64).reshape(-1, 5)
        return cascade.stage_inputs(stage, pixels, boxes=seeds[:, :4], angles=seeds[:, 4])
    return cascade.stage_inputs(stage, pixels, previous=np.stack(part), views=views)


def _seeds(tight: np.ndarray, angles: np.ndarray | None) -> list[np.ndarray]:
    """Stage 1's faces as [x1, y1, x2, y2, roll] rows (roll 0: upright crops), cropped in turns."""
    roll = np.zeros(len(tight)) if angles is None else np.asarray(angles, dtype=np.float64)
    return list(np.column_stack([np.asarray(tight, dtype=np.float64).reshape(-1, 4), roll]))


class LandmarkService(ModelHost):
    """The loaded models (:class:`service.models.ModelHost`) and the request path over them."""

    async def predict(self, req: LandmarkRequest) -> LandmarkResult:
        """Raises ProblemError for every failure a client should see."""
        s = self.settings
        t0 = time.monotonic()
        lm = self.select_model(req.model, req.scheme)
        if req.max_faces is not None and not 1 <= req.max_faces <= s.max_faces:
            raise ProblemError("invalid-parameters", f"max_faces must be between 1 and {s.max_faces}")
        if req.deadline_ms is not None and not (
            req.deadline_ms >= MIN_DEADLINE_MS and math.isfinite(req.deadline_ms)
        ):
            raise ProblemError("invalid-parameters", f"deadline_ms must be a number >= {MIN_DEADLINE_MS:g}")
        if req.views is not None and (req.views not in VIEWS or req.views > s.max_views):
            allowed = [v for v in VIEWS if v <= s.max_views]
            raise ProblemError("invalid-parameters", f"views must be one of {allowed} (WINGMARK_MAX_VIEWS)")
        if req.refine is not None and req.refine not in REFINE:
            raise ProblemError("invalid-parameters", f"refine must be one of {', '.join(REFINE)}")
        client_boxes = self._check_boxes(req.boxes) if req.boxes is not None else None
        if client_boxes is None and self.detector is None:
            raise ProblemError("invalid-parameters", "no face detector is configured: send boxes")
        budget_ms = min(s.deadline_ms, req.deadline_ms) if req.deadline_ms else s.deadline_ms
        deadline = t0 + budget_ms / 1000.0
        loop = asyncio.get_running_loop()
        timings: dict[str, float] = {}
        assert lm.landmarker is not None
        landmarker = lm.landmarker

        # 1. decode: with the client's boxes, JPEGs at the DCT scale the faces' crops still allow; else
        # at the detector's working size (decoded again, finer, after detection if the crops need it)
        reduce = landmarker.first_reduction(
            req.data, client_boxes, min_face=s.detect_min_face, max_side=s.decode_max_side
        )
        image = await self._decode(req.data, reduce, deadline)
        t1 = time.monotonic()
        timings["decode"] = (t1 - t0) * 1000
        self.metrics.stage_duration.labels("decode").observe(t1 - t0)

        # 2. faces: the client's boxes or the detector's
        if client_boxes is not None:
            found = landmarker.find_faces(image, self._check_boxes(req.boxes or [], image))
        else:
            find = functools.partial(
                landmarker.find_faces,
                image,
                max_faces=req.max_faces or s.max_faces,
                min_face=s.detect_min_face,
            )
            found = await self._until(deadline, loop.run_in_executor(self._pool, find))
        t2 = time.monotonic()
        timings["detect"] = (t2 - t1) * 1000
        if client_boxes is None:
            self.metrics.stage_duration.labels("detect").observe(t2 - t1)
            finer = landmarker.crop_reduction(image, found, s.decode_max_side) if reduce is not None else None
            if finer is not None:  # the faces' crops need more pixels than detection did
                image = await self._decode(req.data, finer, deadline)
                timings["decode"] += (time.monotonic() - t2) * 1000

        # 3. crops -> batcher(s) -> cascade -> faces in original pixels
        timings["queue"] = timings["inference"] = 0.0
        faces = []
        refined = bool(len(found.boxes)) and landmarker.refines(found, req.refine)
        if len(found.boxes):
            seeds = _seeds(landmarker.tight_boxes(image, found), found.angles)
            pts = await self._cascade(lm, image.pixels, seeds, deadline, timings, req.views)
            if refined:  # the second pass, from the tight box of the first's points
                seeds = _seeds(landmarker.refine_boxes(pts), None)
                pts = await self._cascade(lm, image.pixels, seeds, deadline, timings, req.views)
            self.metrics.stage_duration.labels("queue").observe(timings["queue"] / 1000)
            self.metrics.stage_duration.labels("inference").observe(timings["inference"] / 1000)
            t3 = time.monotonic()
            faces = landmarker.faces(image, found, pts)
            self.metrics.stage_duration.labels("map").observe(time.monotonic() - t3)
            if req.pose:  # ~1 ms a face: in the thread pool, off the event loop
                poses = functools.partial(
                    face_poses, [f.landmarks for f in faces], lm.scheme, image.width, image.height
                )
                for face, pose in zip(
                    faces, await self._until(deadline, loop.run_in_executor(self._pool, poses)), strict=True
                ):
                    face.pose = pose
        total = time.monotonic() - t0
        timings["total"] = total * 1000
        self.metrics.stage_duration.labels("total").observe(total)
        self.metrics.faces_per_request.observe(len(faces))
        views = landmarker.cascade.views_for(req.views)
        self.metrics.faces_by_views.labels(views=str(views)).inc(len(faces))
        timings = {k: round(v, 3) for k, v in timings.items()}
        return LandmarkResult(
            lm, image, found.source, faces, timings, with_pose=req.pose, views=views, refined=refined
        )

    async def _decode(self, data: bytes, reduce: int | None, deadline: float) -> DecodedImage:
        """The request's image (JPEGs at 1/``reduce``), in the decode threads or, large by its header,
        in the niced decode process, which the deadline stops; decode errors as ProblemError."""
        s = self.settings
        options: dict[str, Any] = {"max_pixels": s.max_image_pixels, "max_side": s.decode_max_side,
                                   "min_side": s.min_image_side, "reduce": reduce}  # fmt: skip
        defer = s.decode_worker_pixels if self._big is not None else None
        decode = functools.partial(decode_image, data, defer_pixels=defer, **options)
        loop = asyncio.get_running_loop()
        try:
            try:
                return await self._until(deadline, loop.run_in_executor(self._pool, decode))
            except DecodeDeferredError:
                assert self._big is not None
                return await self._until(deadline, self._big.decode(data, **options))
        except ImageTooLargeError as exc:
            raise ProblemError("image-too-large", str(exc)) from None
        except ImageDecodeError as exc:
            slug = "unsupported-media-type" if "unsupported image format" in str(exc) else "invalid-image"
            raise ProblemError(slug, str(exc)) from None

    def _check_boxes(self, boxes: list[list[float]], image: DecodedImage | None = None) -> np.ndarray:
        """The client's boxes (``runtime.check_boxes``, then the per-request limit) or 400 invalid-boxes."""
        try:
            arr = check_boxes(boxes, image)
        except InvalidBoxesError as exc:
            raise ProblemError("invalid-boxes", str(exc)) from None
        if len(arr) > self.settings.max_faces:
            raise ProblemError(
                "invalid-boxes", f"{len(arr)} boxes; at most {self.settings.max_faces} per request"
            )
        return arr

    # -- the cascade through the batchers ----------------------------------------------------------
    async def _cascade(
        self,
        lm: LoadedModel,
        pixels: np.ndarray,
        seeds: list[np.ndarray],
        deadline: float,
        timings: dict[str, float],
        views: int | None = None,
    ) -> np.ndarray:
        """One pass of the cascade over ``seeds`` -> [N, K, 2]: stage by stage through the stage batchers
        where the model has them, else stage-1 crops in the crop thread and the whole cascade as one batch
        on the device thread; queue and inference times added to ``timings``. ``views``: the last
        stage's (None: the cascade's own, WINGMARK_VIEWS)."""
        assert lm.landmarker is not None
        if lm.stage_batchers:
            return await self._cascade_pipelined(
                lm.landmarker.cascade, lm.stage_batchers, pixels, seeds, deadline, timings, views
            )
        assert lm.batcher is not None
        started = time.monotonic()
        prepare = functools.partial(lm.landmarker.cascade.prepare, pixels, views=views)
        turns = await in_turns(
            functools.partial(self._crop_turn, deadline),
            lambda part: prepare(np.asarray(part)[:, :4], np.asarray(part)[:, 4]),
            seeds,
            self._chunk,
        )
        self.metrics.stage_duration.labels("crop").observe(time.monotonic() - started)
        outcomes, queue, run = await self._submit_in_turns(lm.batcher, turns, deadline)
        timings["queue"] += queue * 1000
        timings["inference"] += run * 1000
        return np.stack([o.value for o in outcomes])

    async def _cascade_pipelined(
        self,
        cascade: Cascade,
        batchers: list[DynamicBatcher[np.ndarray, np.ndarray]],
        pixels: np.ndarray,
        seeds: list[np.ndarray],
        deadline: float,
        timings: dict[str, float],
        views: int | None = None,
    ) -> np.ndarray:
        """Each stage: crops in the crop thread, inference batched with other requests' faces on the
        device thread, points mapped back here; the next stage re-crops from them. -> [N, K, 2]."""
        pts: np.ndarray | None = None
        for stage, batcher in enumerate(batchers):
            started = time.monotonic()
            items = seeds if stage == 0 else list(pts if pts is not None else [])
            work = functools.partial(_stage_turn, cascade, stage, pixels, views)
            # a viewed stage crops each face `views` times: fewer faces a turn, about as many crops
            chunk = (
                max(1, self._chunk // cascade.views_for(views))
                if cascade.viewed(stage, views)
                else self._chunk
            )
            turns = await in_turns(functools.partial(self._crop_turn, deadline), work, items, chunk)
            mats = np.concatenate([m for m, _ in turns])
            self.metrics.stage_duration.labels("crop").observe(time.monotonic() - started)
            outcomes, queue, run = await self._submit_in_turns(batcher, [list(x) for _, x in turns], deadline)
            timings["queue"] += queue * 1000
            timings["inference"] += run * 1000
            self.metrics.stage_duration.labels(f"stage{stage + 1}").observe(run)
            self.metrics.stage_duration.labels(f"stage{stage + 1}_queue").observe(queue)
            pts = cascade.points(stage, np.stack([o.value for o in outcomes]), mats, views)
        assert pts is not None
        return pts

    @property
    def _chunk(self) -> int:
        return self.settings.crop_chunk_faces

    def _crop_turn(self, deadline: float, work: Callable[[], T]) -> Awaitable[T]:
        """One turn of a request's crops on the shared crop thread, within its deadline
        (``service.limits.in_turns``: other requests' turns run between a request's turns)."""
        return self._until(deadline, asyncio.get_running_loop().run_in_executor(self._crops, work))

    async def _until(self, deadline: float, awaitable: Awaitable[T]) -> T:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            return await wait_within(awaitable, remaining)
        except TimeoutError:
            self.metrics.rejected.labels("deadline").inc()
            raise ProblemError("deadline-exceeded", "the request's deadline passed") from None

    async def _submit_in_turns(
        self, batcher: DynamicBatcher[Any, np.ndarray], turns: Sequence[Sequence[Any]], deadline: float
    ) -> tuple[list[Outcome[np.ndarray]], float, float]:
        """A request's faces into the batcher one crop turn (``WINGMARK_CROP_CHUNK_FACES``) at a time,
        each turn queued once the previous one is answered, behind what other requests queued meanwhile:
        a request with many faces cannot fill whole batches ahead of everyone else (32 faces of the
        second stage are ~80 ms of INT8 inference on this CPU, a turn of 8 a quarter of that). ->
        outcomes in order, and the queue and run seconds summed over the turns."""
        outcomes: list[Outcome[np.ndarray]] = []
        queue = run = 0.0
        for turn in turns:
            part = await self._submit(batcher, turn, deadline)
            queue += max((o.queue_s for o in part), default=0.0)
            run += max((o.run_s for o in part), default=0.0)
            outcomes += part
        return outcomes, queue, run

    async def _submit(
        self, batcher: DynamicBatcher[Any, np.ndarray], jobs: Sequence[Any], deadline: float
    ) -> list[Outcome[np.ndarray]]:
        try:
            return await batcher.submit_many(jobs, deadline=deadline)
        except QueueFullError as exc:
            self.metrics.rejected.labels("queue_full").inc()
            raise ProblemError("queue-full", str(exc), headers={"Retry-After": "1"}) from None
        except DeadlineExceededError:
            self.metrics.rejected.labels("deadline").inc()
            raise ProblemError("deadline-exceeded", "the request's deadline passed while queued") from None
        except BatcherClosedError as exc:
            self.metrics.rejected.labels("not_ready").inc()
            raise ProblemError("not-ready", str(exc), headers={"Retry-After": "5"}) from None
        except Exception as exc:
            log.exception("inference batch failed")
            raise ProblemError("inference-failed", f"{type(exc).__name__}: {exc}") from None
