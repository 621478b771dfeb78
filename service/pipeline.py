"""The request path, independent of HTTP: decode -> faces -> crops -> batcher -> cascade -> map back.

:class:`LandmarkService` owns the models, the detector, the thread pools and one batcher per model;
the FastAPI routes (and ``wingmark predict`` in-process) call :meth:`LandmarkService.predict`.
Coordinates inside the pipeline are those of the decoded pixel array (which may be a reduced
JPEG decode); they are scaled to original image pixels only at the edges.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from model_store.cascade import Cascade as StageCascade
from model_store.geometry import BoxCalibration
from model_store.pose import estimate_pose
from model_store.schemes import SCHEMES
from model_store.store import DEFAULT_MODELS, ModelStore, ModelVersion
from runtime.detectors import Detector, create_detector, eye_roll
from service.backends import Backend, create_backend
from service.batcher import (
    BatcherClosedError,
    DeadlineExceededError,
    DeviceGate,
    DynamicBatcher,
    Outcome,
    QueueFullError,
)
from service.decode import DecodedImage, ImageDecodeError, ImageTooLargeError, decode_image
from service.errors import ProblemError
from service.metrics import Metrics
from service.settings import Settings

__all__ = [
    "Cascade",
    "FaceJob",
    "FaceResult",
    "LandmarkRequest",
    "LandmarkResult",
    "LandmarkService",
    "LoadedModel",
    "face_poses",
]

log = logging.getLogger("wingmark.service")
MIN_DEADLINE_MS = 10.0  # a request's own deadline_ms below this could never be met: 422, not a 504
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class FaceJob:
    """One face crop waiting for the device worker."""

    image: np.ndarray  # [H, W, 3] uint8, the decoded image (shared by the faces of one request)
    matrix: np.ndarray  # [2, 3] image -> stage-1 crop
    crop: np.ndarray  # [S, S, 3] float32 stage-1 crop


class Cascade:
    """A model version and its backend: the geometry of ``model_store.cascade`` over ``backend.run``.

    :meth:`prepare` (decode pool) makes the stage-1 crops; :meth:`run_batch` (device worker) runs
    stage 1 on a batch and every later stage from the re-aligned crops of the previous one.
    """

    def __init__(self, model: ModelVersion, backend: Backend) -> None:
        self.model = model
        self.backend = backend
        self.geometry = StageCascade.from_manifest(model.manifest)
        self.scheme = self.geometry.scheme
        self.sizes = [g.input_size for g in self.geometry.stages]

    def prepare(
        self, image: np.ndarray, tight_boxes: np.ndarray, angles: np.ndarray | None = None
    ) -> list[FaceJob]:
        """image [H, W, 3] uint8, tight_boxes [N, 4] (image pixels), roll angles [N] or None -> N jobs."""
        g = self.geometry
        boxes = np.asarray(tight_boxes, dtype=np.float64).reshape(-1, 4)
        mats = g.matrices(0, boxes=boxes, angles=angles)  # (N, 2, 3)
        crops = g.crops(0, [image] * len(mats), mats)  # (N, S, S, 3)
        return [FaceJob(image=image, matrix=m, crop=c) for m, c in zip(mats, crops, strict=True)]

    def run_batch(self, jobs: Sequence[FaceJob]) -> list[np.ndarray]:
        """The whole cascade on one batch, on one thread: N jobs -> N arrays [K, 2] in image pixels.

        Used when ``settings.cascade_pipeline`` is off (and by tests): later stages' crops are then
        cut on the device worker, between its inference calls.
        """
        g = self.geometry
        images = [j.image for j in jobs]
        mats = np.stack([j.matrix for j in jobs])  # (N, 2, 3)
        x = g.to_input(0, np.stack([j.crop for j in jobs]))  # (N, 3, S, S)
        pts = g.points(0, self.backend.run(0, x), mats)  # (N, K, 2) image px
        for stage in range(1, g.num_stages):
            mats = g.matrices(stage, previous=pts)
            pts = g.points(stage, self.backend.run(stage, g.inputs(stage, images, mats)), mats)
        return list(pts)

    # -- the pipelined cascade: crops in the worker pool, one batcher per stage ----------------------
    def stage_inputs(
        self,
        stage: int,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        angles: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One request's faces for ``stage``: matrices [N, 2, 3] and network input [N, 3, S, S]."""
        g = self.geometry
        mats = g.matrices(stage, boxes=boxes, previous=previous, angles=angles)
        return mats, g.inputs(stage, [image] * len(mats), mats)

    def stage_runner(self, stage: int) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """The device worker's work for one stage: N inputs [3, S, S] -> N outputs [2K] (inference only)."""

        def run(xs: list[np.ndarray]) -> list[np.ndarray]:
            return list(self.backend.run(stage, np.stack(xs)))

        return run


@dataclass
class LoadedModel:
    name: str
    version: str
    scheme: str
    backend_name: str
    device: str
    input_sizes: list[int]
    calibration_names: list[str]
    model: ModelVersion | None = None
    cascade: Cascade | None = None
    batcher: DynamicBatcher[FaceJob, np.ndarray] | None = None
    stage_batchers: list[DynamicBatcher[np.ndarray, np.ndarray]] = field(default_factory=list)
    ready: bool = False
    error: str | None = None
    # calibrations the manifest lacks, from the detector's own per-scheme fit (model_store/detectors)
    detector_calibrations: dict[str, BoxCalibration] = field(default_factory=dict)

    def calibration(self, source: str) -> BoxCalibration:
        """The manifest's calibration for ``source``, else the detector's own (per scheme), else identity."""
        assert self.model is not None
        spec = self.model.manifest.box_calibrations.get(source)
        if spec is not None:
            return spec.to_calibration()
        return self.detector_calibrations.get(source, BoxCalibration())


@dataclass
class LandmarkRequest:
    data: bytes
    model: str | None = None
    scheme: str | None = None
    boxes: list[list[float]] | None = None
    max_faces: int | None = None
    deadline_ms: float | None = None
    pose: bool = False


@dataclass
class FaceResult:
    box: list[float]
    detection_score: float | None
    landmarks: list[list[float]]
    pose: dict[str, float] | None = None


@dataclass
class LandmarkResult:
    model: LoadedModel
    image: DecodedImage
    box_source: str
    faces: list[FaceResult]
    timings_ms: dict[str, float] = field(default_factory=dict)
    with_pose: bool = False  # the request asked for poses: every face carries a "pose" key

    def to_dict(self) -> dict[str, Any]:
        """The response document of POST /v1/landmarks (see service.schemas.LandmarkResponse)."""
        lm = self.model
        return {
            "model": {
                "name": lm.name,
                "version": lm.version,
                "scheme": lm.scheme,
                "backend": lm.backend_name,
            },
            "image": {"width": self.image.width, "height": self.image.height, "format": self.image.format},
            "box_source": self.box_source,
            "faces": [
                {"box": f.box, "detection_score": f.detection_score, "landmarks": f.landmarks}
                | ({"pose": f.pose} if self.with_pose else {})
                for f in self.faces
            ],
            "timings_ms": self.timings_ms,
        }

    def server_timing(self) -> str:
        return ", ".join(f"{k};dur={v:.2f}" for k, v in self.timings_ms.items())


def face_poses(
    landmarks: Sequence[Sequence[Sequence[float]]], scheme: str, width: int, height: int
) -> list[dict[str, float] | None]:
    """Head pose of each face (``model_store.pose.estimate_pose``) from its landmarks in original image
    pixels; None for a face whose pose cannot be solved."""
    out: list[dict[str, float] | None] = []
    for pts in landmarks:
        try:
            out.append(estimate_pose(np.asarray(pts), scheme, width, height).to_dict())
        except ValueError:
            out.append(None)
    return out


class _FailuresOnly:
    """A batch observer that passes failures on and ignores batch sizes."""

    def __init__(self, inner: Metrics) -> None:
        self._inner = inner

    def on_batch(self, size: int, run_s: float) -> None:
        pass

    def on_failure(self, size: int, error: BaseException) -> None:
        self._inner.on_failure(size, error)


class LandmarkService:
    """Everything a landmark request needs; built and started by the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.store = ModelStore(settings.model_root)
        self.models: dict[str, LoadedModel] = {}
        self.defaults: dict[str, str] = {}
        self.detector: Detector | None = None
        self.state = "loading"  # loading | ready | failed | stopping
        self.load_error: str | None = None
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="wingmark-decode")
        # Crops (a fraction of a millisecond per face) get their own thread so that they never wait
        # behind other requests' decodes and detections: the device thread would idle meanwhile.
        self._crops = ThreadPoolExecutor(1, thread_name_prefix="wingmark-crop")
        self._device = ThreadPoolExecutor(1, thread_name_prefix=f"wingmark-{settings.device}")
        # every batcher on the device thread shares its gate (greedy policy)
        self._device_gate = DeviceGate() if settings.batch_policy == "greedy" else None
        self._load_task: asyncio.Task[None] | None = None
        self.metrics.queue_depth.set_function(self._queue_depth)

    # -- lifecycle ---------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The models to load: settings.models, else each scheme's default model in the store, else all."""
        if self.settings.models:
            return list(self.settings.models)
        available = self.store.list_models()
        defaults = [DEFAULT_MODELS[s] for s in SCHEMES if DEFAULT_MODELS.get(s) in available]
        return defaults or available

    async def start(self, *, background: bool = True) -> None:
        """Load detector and models (in worker threads), warm them up, start the batchers."""
        if background:
            self._load_task = asyncio.get_running_loop().create_task(self._load_all())
        else:
            await self._load_all()

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        try:
            self.detector = await loop.run_in_executor(self._pool, self._make_detector)
            names = await loop.run_in_executor(self._pool, self.model_names)
        except Exception as exc:
            log.exception("service start failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            return
        if not names:
            self.load_error = f"no models in the store at {self.store.root}"
            log.error(self.load_error)
        for spec in names:
            lm = await loop.run_in_executor(self._device, self._load_model, spec)
            if lm.ready:
                assert lm.cascade is not None
                if s.cascade_pipeline:  # the device thread runs inference only, one batcher per stage
                    lm.stage_batchers = [
                        self._batcher(lm.cascade.stage_runner(i), f"batcher-{lm.name}-{i + 1}", sizes=i == 0)
                        for i in range(len(lm.cascade.sizes))
                    ]
                else:
                    lm.batcher = self._batcher(lm.cascade.run_batch, f"batcher-{lm.name}")
                self.metrics.model_info.labels(lm.name, lm.version, lm.scheme, lm.backend_name).set(1)
                preferred = DEFAULT_MODELS.get(lm.scheme) == lm.name
                if lm.scheme not in self.defaults or preferred:
                    self.defaults[lm.scheme] = lm.name
            self.models[lm.name] = lm
        failed = [n for n, m in self.models.items() if not m.ready]
        self.state = "ready" if self.models and not failed and not self.load_error else "failed"
        log.info("models: %s; state %s", {n: m.ready for n, m in self.models.items()}, self.state)

    def _batcher(
        self, process: Callable[[list[Any]], Sequence[np.ndarray]], name: str, *, sizes: bool = True
    ) -> DynamicBatcher[Any, np.ndarray]:
        """A started batcher on the device thread; ``sizes=False``: it reports failures, not batch sizes
        (every face passes each stage's batcher; the batch-size metric counts it once, at stage 1)."""
        s = self.settings
        batcher: DynamicBatcher[Any, np.ndarray] = DynamicBatcher(
            process,
            executor=self._device,
            max_batch_size=s.max_batch_size,
            max_queue_delay_s=s.max_queue_delay_ms / 1000.0,
            queue_limit=s.queue_limit,
            observer=self.metrics if sizes else _FailuresOnly(self.metrics),
            name=name,
            gate=self._device_gate,
        )
        batcher.start()
        return batcher

    def _make_detector(self) -> Detector | None:
        s = self.settings
        if s.detector == "none":
            return None
        if s.detector != "dlib_hog":  # the ONNX CNN detectors
            return create_detector(
                s.detector, min_face=s.detect_min_face, score_threshold=s.detect_score_threshold
            )
        return create_detector(
            s.detector,
            max_side=s.detect_max_side,
            min_face=s.detect_min_face,
            retry_max_side=s.detect_retry_max_side,
            upsample=s.detect_upsample,
            threshold=s.detect_threshold,
            instances=s.decode_threads,
        )

    def _load_model(self, spec: str) -> LoadedModel:
        s = self.settings
        name, _, version = spec.partition("@")
        lm = LoadedModel(name, version or "?", "?", s.backend, s.device, [], [])
        try:
            mv = self.store.resolve(name, version or "latest")
            if s.verify_models:
                self.store.verify(mv)
            lm.version, lm.scheme, lm.model = mv.version, mv.manifest.scheme, mv
            lm.input_sizes = [st.input_size for st in mv.manifest.stages]
            lm.calibration_names = sorted(mv.manifest.box_calibrations)
            options: dict[str, Any] = (
                {"threads": s.ort_threads, "spinning": s.ort_spinning} if s.backend == "onnxruntime" else {}
            )
            backend = create_backend(
                s.backend, mv, device=s.device, max_batch_size=s.max_batch_size, **options
            )
            backend.warmup(s.max_batch_size)
            lm.backend_name = backend.name
            lm.cascade = Cascade(mv, backend)
            if self.detector is not None and self.detector.name not in mv.manifest.box_calibrations:
                own = getattr(self.detector, "calibration", None)
                cal = own(mv.manifest.scheme) if callable(own) else None
                if cal is not None:
                    lm.detector_calibrations[self.detector.name] = cal
                    lm.calibration_names = sorted([*lm.calibration_names, self.detector.name])
                else:
                    log.warning(
                        "%s/%s has no %r box calibration; using identity",
                        name,
                        mv.version,
                        self.detector.name,
                    )
            lm.ready = True
        except Exception as exc:
            log.exception("loading model %s failed", spec)
            lm.error = f"{type(exc).__name__}: {exc}"
        return lm

    async def stop(self) -> None:
        """Finish every admitted face, then release backends and threads."""
        self.state = "stopping"
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        for lm in self.models.values():
            for b in [lm.batcher, *lm.stage_batchers]:
                if b is not None:
                    await b.stop(drain=True)
        for lm in self.models.values():
            if lm.cascade is not None:
                lm.cascade.backend.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._crops.shutdown(wait=False, cancel_futures=True)
        self._device.shutdown(wait=True)

    def _queue_depth(self) -> float:
        batchers = [b for m in self.models.values() for b in [m.batcher, *m.stage_batchers] if b is not None]
        return float(sum(b.queued for b in batchers))

    def not_ready_reason(self) -> str:
        if self.state == "loading":
            return "models are still loading"
        if self.state == "stopping":
            return "the service is stopping"
        errors = [f"{n}: {m.error}" for n, m in self.models.items() if m.error]
        return "model loading failed: " + "; ".join(([self.load_error] if self.load_error else []) + errors)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # -- one request -------------------------------------------------------------------------------
    def select_model(self, model: str | None, scheme: str | None) -> LoadedModel:
        # While loading, every request waits for readiness; once failed, the models that did load still serve.
        if self.state in ("loading", "stopping") or not any(m.ready for m in self.models.values()):
            self.metrics.rejected.labels("not_ready").inc()
            raise ProblemError("not-ready", self.not_ready_reason(), headers={"Retry-After": "5"})
        if scheme is not None and scheme not in SCHEMES:
            raise ProblemError("invalid-parameters", f"unknown scheme {scheme!r}; known: {sorted(SCHEMES)}")
        if model:
            name, _, version = model.partition("@")
            lm = self.models.get(name)
            if lm is None or (version and version != lm.version):
                raise ProblemError(
                    "unknown-model", f"model {model!r} is not loaded; loaded: {sorted(self.models)}"
                )
            if scheme is not None and scheme != lm.scheme:
                raise ProblemError(
                    "invalid-parameters", f"model {name!r} has scheme {lm.scheme}, not {scheme}"
                )
        else:
            scheme = scheme or "ibug68"
            if scheme not in self.defaults:
                raise ProblemError("unknown-model", f"no model for scheme {scheme!r} is loaded")
            lm = self.models[self.defaults[scheme]]
        if not lm.ready:
            self.metrics.rejected.labels("not_ready").inc()
            raise ProblemError(
                "not-ready", f"model {lm.name!r} is not ready: {lm.error}", headers={"Retry-After": "5"}
            )
        return lm

    def _check_boxes(self, boxes: list[list[float]]) -> np.ndarray:
        try:
            arr = np.asarray(boxes, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProblemError("invalid-boxes", "boxes must be a list of [x1, y1, x2, y2] numbers") from None
        if arr.size == 0:
            return np.zeros((0, 4))
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ProblemError(
                "invalid-boxes", f"boxes must be a list of [x1, y1, x2, y2]; got shape {list(arr.shape)}"
            )
        if not np.isfinite(arr).all():
            raise ProblemError("invalid-boxes", "box coordinates must be finite numbers")
        bad = np.nonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))[0]
        if len(bad):
            raise ProblemError(
                "invalid-boxes", f"box {int(bad[0])} is empty or inverted (need x2 > x1, y2 > y1)"
            )
        if len(arr) > self.settings.max_faces:
            raise ProblemError(
                "invalid-boxes", f"{len(arr)} boxes; at most {self.settings.max_faces} per request"
            )
        return arr

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
        client_boxes = self._check_boxes(req.boxes) if req.boxes is not None else None
        if client_boxes is None and self.detector is None:
            raise ProblemError("invalid-parameters", "no face detector is configured: send boxes")
        budget_ms = min(s.deadline_ms, req.deadline_ms) if req.deadline_ms else s.deadline_ms
        deadline = t0 + budget_ms / 1000.0
        loop = asyncio.get_running_loop()
        timings: dict[str, float] = {}

        # 1. decode
        try:
            image = await self._until(
                deadline,
                loop.run_in_executor(
                    self._pool,
                    lambda: decode_image(
                        req.data,
                        max_pixels=s.max_image_pixels,
                        max_side=s.decode_max_side,
                        min_side=s.min_image_side,
                    ),
                ),
            )
        except ImageTooLargeError as exc:
            raise ProblemError("image-too-large", str(exc)) from None
        except ImageDecodeError as exc:
            slug = "unsupported-media-type" if "unsupported image format" in str(exc) else "invalid-image"
            raise ProblemError(slug, str(exc)) from None
        t1 = time.monotonic()
        timings["decode"] = (t1 - t0) * 1000
        self.metrics.stage_duration.labels("decode").observe(t1 - t0)
        scale = np.array([image.scale_x, image.scale_y, image.scale_x, image.scale_y])

        # 2. faces: the client's boxes or the detector's
        scores: list[float | None]
        if client_boxes is not None:
            inside = (client_boxes[:, 0] < image.width) & (client_boxes[:, 2] > 0)
            inside &= (client_boxes[:, 1] < image.height) & (client_boxes[:, 3] > 0)
            if not inside.all():
                i = int(np.nonzero(~inside)[0][0])
                raise ProblemError(
                    "invalid-boxes", f"box {i} lies outside the {image.width}x{image.height} image"
                )
            # A box may reach past the image (a face at its edge), but by no more than the image's size.
            w, h = image.width, image.height
            huge = (client_boxes[:, 0] < -w) | (client_boxes[:, 2] > 2 * w)
            huge |= (client_boxes[:, 1] < -h) | (client_boxes[:, 3] > 2 * h)
            if huge.any():
                i = int(np.nonzero(huge)[0][0])
                raise ProblemError(
                    "invalid-boxes", f"box {i} reaches further than the image's own size past its edges"
                )
            boxes, scores, source = client_boxes, [None] * len(client_boxes), "client"
            angles: np.ndarray | None = None
        else:
            assert self.detector is not None
            detector = self.detector
            dets = await self._until(
                deadline,
                loop.run_in_executor(
                    self._pool,
                    lambda: detector.detect(image.pixels, min_face=s.detect_min_face / image.scale_x),
                ),
            )
            limit = req.max_faces or s.max_faces
            boxes = dets.boxes[:limit] * scale
            scores, source = [float(v) for v in dets.scores[:limit]], detector.name
            angles = None
            if dets.keypoints is not None:  # the detector's eyes: stage 1 starts with the face level
                angles = eye_roll(dets.keypoints[:limit])
        t2 = time.monotonic()
        timings["detect"] = (t2 - t1) * 1000
        if source != "client":
            self.metrics.stage_duration.labels("detect").observe(t2 - t1)

        # 3. crops -> batcher(s) -> cascade
        timings["queue"] = timings["inference"] = 0.0
        faces: list[FaceResult] = []
        if len(boxes):
            assert lm.cascade is not None
            tight = lm.calibration(source).apply(boxes / scale)
            if lm.stage_batchers:
                pts = await self._cascade_pipelined(
                    lm.cascade, lm.stage_batchers, image.pixels, tight, deadline, timings, angles
                )
            else:
                pts = await self._cascade_on_device(lm, image.pixels, tight, deadline, timings, angles)
            self.metrics.stage_duration.labels("queue").observe(timings["queue"] / 1000)
            self.metrics.stage_duration.labels("inference").observe(timings["inference"] / 1000)
            t3 = time.monotonic()
            xy = np.round(pts * scale[:2], 2).tolist()  # (N, K, 2) original image px
            rounded = np.round(boxes, 2).tolist()
            faces = [FaceResult(b, score, p) for b, score, p in zip(rounded, scores, xy, strict=True)]
            self.metrics.stage_duration.labels("map").observe(time.monotonic() - t3)
            if req.pose:  # ~1 ms a face: in the thread pool, off the event loop
                poses = await self._until(
                    deadline,
                    loop.run_in_executor(
                        self._pool,
                        face_poses,
                        [f.landmarks for f in faces],
                        lm.scheme,
                        image.width,
                        image.height,
                    ),
                )
                for face, pose in zip(faces, poses, strict=True):
                    face.pose = pose
        total = time.monotonic() - t0
        timings["total"] = total * 1000
        self.metrics.stage_duration.labels("total").observe(total)
        self.metrics.faces_per_request.observe(len(faces))
        timings = {k: round(v, 3) for k, v in timings.items()}
        return LandmarkResult(
            model=lm, image=image, box_source=source, faces=faces, timings_ms=timings, with_pose=req.pose
        )

    async def _cascade_pipelined(
        self,
        cascade: Cascade,
        batchers: list[DynamicBatcher[np.ndarray, np.ndarray]],
        pixels: np.ndarray,
        tight: np.ndarray,
        deadline: float,
        timings: dict[str, float],
        angles: np.ndarray | None = None,
    ) -> np.ndarray:
        """Each stage: crops in the worker pool, inference batched with other requests' faces on the
        device thread, points mapped back here; the next stage re-crops from them. -> [N, K, 2]."""
        loop = asyncio.get_running_loop()
        pts: np.ndarray | None = None
        for stage, batcher in enumerate(batchers):
            started = time.monotonic()
            prep = functools.partial(
                cascade.stage_inputs,
                stage,
                pixels,
                boxes=tight if stage == 0 else None,
                previous=pts,
                angles=angles if stage == 0 else None,
            )
            mats, x = await self._until(deadline, loop.run_in_executor(self._crops, prep))
            self.metrics.stage_duration.labels("crop").observe(time.monotonic() - started)
            outcomes = await self._submit(batcher, list(x), deadline)
            queue = max(o.queue_s for o in outcomes)
            run = max(o.run_s for o in outcomes)
            timings["queue"] += queue * 1000
            timings["inference"] += run * 1000
            self.metrics.stage_duration.labels(f"stage{stage + 1}").observe(run)
            self.metrics.stage_duration.labels(f"stage{stage + 1}_queue").observe(queue)
            pts = cascade.geometry.points(stage, np.stack([o.value for o in outcomes]), mats)
        assert pts is not None
        return pts

    async def _cascade_on_device(
        self,
        lm: LoadedModel,
        pixels: np.ndarray,
        tight: np.ndarray,
        deadline: float,
        timings: dict[str, float],
        angles: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stage-1 crops in the worker pool; the whole cascade as one batch on the device thread."""
        assert lm.cascade is not None and lm.batcher is not None
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        jobs = await self._until(
            deadline, loop.run_in_executor(self._crops, lm.cascade.prepare, pixels, tight, angles)
        )
        self.metrics.stage_duration.labels("crop").observe(time.monotonic() - started)
        outcomes = await self._submit(lm.batcher, jobs, deadline)
        timings["queue"] = max(o.queue_s for o in outcomes) * 1000
        timings["inference"] = max(o.run_s for o in outcomes) * 1000
        return np.stack([o.value for o in outcomes])

    async def _until(self, deadline: float, awaitable: Awaitable[T]) -> T:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            return await asyncio.wait_for(awaitable, remaining)
        except TimeoutError:
            self.metrics.rejected.labels("deadline").inc()
            raise ProblemError("deadline-exceeded", "the request's deadline passed") from None

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
