"""Model lifecycle and readiness: load the detector and the models, warm them up, start their batchers,
say whether the service is ready, pick the model a request asks for, and stop.

Each loaded model is a :class:`runtime.Landmarker` (model version + backend + the shared detector)
with its batchers: one per cascade stage (``cascade_pipeline``, the default), or one for the whole
cascade. Every batcher runs on the one device thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.schemes import SCHEMES
from model_store.store import DEFAULT_MODELS, ModelStore
from runtime import Detector, FaceJob, Landmarker, create_backend, create_detector
from runtime.precision import choose_variant, cpu_flags
from service.batcher import DeviceGate, DynamicBatcher
from service.decode_worker import DecodeWorker
from service.errors import ProblemError, redact_paths
from service.metrics import Metrics
from service.settings import Settings

__all__ = ["LoadedModel", "ModelHost"]

log = logging.getLogger("wingmark.service")


@dataclass
class LoadedModel:
    """One model as the service holds it (also when it failed to load: then ``error`` says why)."""

    name: str
    version: str
    scheme: str
    backend_name: str
    device: str
    input_sizes: list[int]
    calibration_names: list[str]
    landmarker: Landmarker | None = None
    batcher: DynamicBatcher[FaceJob, np.ndarray] | None = None
    stage_batchers: list[DynamicBatcher[np.ndarray, np.ndarray]] = field(default_factory=list)
    ready: bool = False
    error: str | None = None
    precision: str = "float"  # float | int8 (runtime.precision.choose_variant)
    precision_reason: str = ""
    float_name: str = ""  # the model asked for (settings or the scheme's default); name is what runs

    @property
    def num_points(self) -> int:
        return self.landmarker.cascade.scheme.num_points if self.landmarker else 0


class _FailuresOnly:
    """A batch observer that passes failures on and ignores batch sizes."""

    def __init__(self, inner: Metrics) -> None:
        self._inner = inner

    def on_batch(self, size: int, run_s: float) -> None:
        pass

    def on_failure(self, size: int, error: BaseException) -> None:
        self._inner.on_failure(size, error)


class ModelHost:
    """The loaded models, their batchers and threads, and the service's state."""

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
        # large images: one niced child process, killed at the deadline (service.decode_worker)
        use_worker = settings.decode_worker_pixels > 0 and DecodeWorker.supported()
        self._big = DecodeWorker(settings.decode_worker_nice) if use_worker else None
        # every batcher on the device thread shares its gate (greedy policy)
        self._device_gate = DeviceGate() if settings.batch_policy == "greedy" else None
        self._load_task: asyncio.Task[None] | None = None
        self.metrics.queue_depth.set_function(self._queue_depth)

    def model_names(self) -> list[str]:
        """The models to load: settings.models, else each scheme's default model in the store, else all."""
        if self.settings.models:
            return list(self.settings.models)
        available = self.store.list_models()
        defaults = [DEFAULT_MODELS[s] for s in SCHEMES if DEFAULT_MODELS.get(s) in available]
        return defaults or available

    async def start(self, *, background: bool = True) -> None:
        """Load detector and models (in worker threads), warm them up, start the batchers."""
        if self._big is not None:
            self._big.start()
        if background:
            self._load_task = asyncio.get_running_loop().create_task(self._load_all())
        else:
            await self._load_all()

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.detector = await loop.run_in_executor(self._pool, self._make_detector)
            names = await loop.run_in_executor(self._pool, self.model_names)
        except Exception as exc:
            log.exception("service start failed")
            self.load_error = redact_paths(f"{type(exc).__name__}: {exc}")
            self.state = "failed"
            return
        if not names:
            self.load_error = "no models in the model store"
            log.error("no models in the store at %s", self.store.root)
        for spec in names:
            lm = await loop.run_in_executor(self._device, self._load_model, spec)
            if lm.ready:
                assert lm.landmarker is not None
                cascade = lm.landmarker.cascade
                if self.settings.cascade_pipeline:  # the device thread runs inference only, one per stage
                    lm.stage_batchers = [
                        self._batcher(self._stage_runner(cascade.run_stage, i), f"batcher-{lm.name}-{i + 1}",
                                      sizes=i == 0)
                        for i in range(cascade.num_stages)
                    ]  # fmt: skip
                else:
                    lm.batcher = self._batcher(cascade.run_batch, f"batcher-{lm.name}")
                self.metrics.model_info.labels(lm.name, lm.version, lm.scheme, lm.backend_name).set(1)
                preferred = DEFAULT_MODELS.get(lm.scheme) in {lm.name, lm.float_name}
                if lm.scheme not in self.defaults or preferred:
                    self.defaults[lm.scheme] = lm.name
            self.models[lm.name] = lm
        failed = [n for n, m in self.models.items() if not m.ready]
        self.state = "ready" if self.models and not failed and not self.load_error else "failed"
        log.info("models: %s; state %s", {n: m.ready for n, m in self.models.items()}, self.state)

    @staticmethod
    def _stage_runner(
        run_stage: Callable[[int, np.ndarray], np.ndarray], stage: int
    ) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """The device worker's work for one stage: N inputs [3, S, S] -> N outputs [2K] (inference only)."""

        def run(xs: list[np.ndarray]) -> list[np.ndarray]:
            return list(run_stage(stage, np.stack(xs)))

        return run

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
        return create_detector(s.detector, **s.detector_options())

    def _load_model(self, spec: str) -> LoadedModel:
        s = self.settings
        name, _, version = spec.partition("@")
        lm = LoadedModel(name, version or "?", "?", s.backend, s.device, [], [], float_name=name)
        try:
            mv = self.store.resolve(name, version or "latest")
            choice = choose_variant(
                self.store, name, mv.version, setting=s.precision, flags=cpu_flags(), backend=s.backend
            )
            lm.precision, lm.precision_reason = choice.precision, choice.reason
            if choice.name != name:
                lm.name = choice.name
                mv = self.store.resolve(choice.name, choice.version)
            say = log.warning if choice.saturates else log.info
            say("%s@%s runs %s (%s): %s", name, mv.version, lm.name, choice.precision, choice.reason)
            if s.verify_models:
                self.store.verify(mv)
            lm.version, lm.scheme = mv.version, mv.manifest.scheme
            lm.input_sizes = [st.input_size for st in mv.manifest.stages]
            lm.calibration_names = sorted(mv.manifest.box_calibrations)
            backend = create_backend(
                s.backend, mv, device=s.device, max_batch_size=s.max_batch_size, **s.backend_options()
            )
            backend.warmup(s.max_batch_size)
            lm.backend_name = backend.name
            lm.landmarker = Landmarker(mv, backend, self.detector, refine=s.refine, views=s.views)
            # a manifest without the detector's calibration uses the detector's own (per scheme)
            lm.calibration_names = lm.landmarker.calibration_names
            if self.detector is not None and self.detector.name not in lm.calibration_names:
                log.warning(
                    "%s/%s has no %r box calibration; using identity", name, mv.version, self.detector.name
                )
            lm.ready = True
        except Exception as exc:
            log.exception("loading model %s failed", spec)
            lm.error = redact_paths(f"{type(exc).__name__}: {exc}")
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
            if lm.landmarker is not None:
                lm.landmarker.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._crops.shutdown(wait=False, cancel_futures=True)
        if self._big is not None:
            self._big.close()
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

    def _by_float_name(self, name: str) -> LoadedModel | None:
        """The model loaded in place of the float model ``name`` (its int8 variant), if any."""
        return next((m for m in self.models.values() if m.float_name == name), None)

    def select_model(self, model: str | None, scheme: str | None) -> LoadedModel:
        """The loaded model a request asks for (by name[@version], else its scheme's default)."""
        # While loading, every request waits for readiness; once failed, the models that did load still serve.
        if self.state in ("loading", "stopping") or not any(m.ready for m in self.models.values()):
            self.metrics.rejected.labels("not_ready").inc()
            raise ProblemError("not-ready", self.not_ready_reason(), headers={"Retry-After": "5"})
        if scheme is not None and scheme not in SCHEMES:
            raise ProblemError("invalid-parameters", f"unknown scheme {scheme!r}; known: {sorted(SCHEMES)}")
        if model:
            name, _, version = model.partition("@")
            lm = self.models.get(name) or self._by_float_name(name)
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
