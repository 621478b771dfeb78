"""TensorRT backend (GPU): one engine per stage, built from the stage's ONNX file on first use and
cached by GPU compute capability, TensorRT version, precision and batch profile.

TensorRT and cuda-python are imported when the backend is built, never at module import; torch is
never imported. Engine building, caching and execution live in :mod:`train.export.tensorrt` (a
torch-free module shared with ``wingmark build-engine``), so an engine built offline by the CLI is
the one the service finds in the cache. A cached engine whose key differs (other GPU, other
TensorRT, ONNX file republished) is rebuilt, never loaded.

Options (``create_backend("tensorrt", model, device="cuda:0", max_batch_size=64, **options)``):
``precision`` ("fp16" default, "fp32"; "int8" only with an engine already in the cache, built by
``wingmark build-engine --precision int8``, since the service has no calibration data),
``calibration`` (the INT8 calibration-set identifier of that engine, default the CLI's default),
``opt_batch_size`` (profile optimum, default max/4), ``cache_dir`` (default
``$WINGMARK_ENGINE_CACHE`` or ``~/.cache/wingmark/engines``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_store.store import ModelVersion
from service.backends import BackendUnavailableError, check_batch

__all__ = ["TensorRTBackend"]


def _device_index(device: str) -> int:
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendUnavailableError(
        f"the TensorRT backend needs a CUDA device (cuda or cuda:N), got {device!r}"
    )


class TensorRTBackend:
    """Runs each stage with a TensorRT engine; batches larger than the profile max are split."""

    name = "tensorrt"

    def __init__(
        self,
        model: ModelVersion,
        *,
        device: str = "cuda:0",
        max_batch_size: int = 64,
        precision: str = "fp16",
        opt_batch_size: int | None = None,
        cache_dir: str | Path | None = None,
        calibration: str | None = None,
        log: Any = None,
        **_: Any,
    ) -> None:
        from train.export import tensorrt as trt_engine

        index = _device_index(device)
        ok, reason = trt_engine.cuda_available()
        if not ok:
            raise BackendUnavailableError(f"TensorRT backend unavailable: {reason}")
        if precision not in trt_engine.PRECISIONS:
            raise ValueError(f"precision must be one of {trt_engine.PRECISIONS}, got {precision!r}")
        self.model = model
        self.max_batch_size = max_batch_size
        self.precision = precision
        cache = trt_engine.EngineCache(
            Path(cache_dir) if cache_dir is not None else trt_engine.default_cache_dir(),
            log=log or (lambda _msg: None),
        )
        profile = trt_engine.BatchProfile.for_max(max_batch_size, opt_batch_size)
        capability = trt_engine.device_compute_capability(index)
        version = trt_engine.tensorrt_version()
        self._sizes = [stage.input_size for stage in model.manifest.stages]
        self._runners: list[Any] = []
        self.engine_paths: list[Path] = []
        try:
            for i, stage in enumerate(model.manifest.stages):
                onnx_path = model.path / stage.file
                key = trt_engine.EngineKey(
                    onnx_sha256=trt_engine.sha256_file(onnx_path),
                    compute_capability=capability,
                    tensorrt_version=version,
                    precision=precision,
                    profile=profile,
                    input_shape=(3, stage.input_size, stage.input_size),
                    calibration=(calibration or trt_engine.DEFAULT_INT8_CALIBRATION)
                    if precision == "int8"
                    else None,
                )

                def build(onnx_path: Path = onnx_path) -> bytes:
                    if precision == "int8":
                        raise BackendUnavailableError(
                            "no cached INT8 engine: build it with 'wingmark build-engine --precision int8'"
                        )
                    return trt_engine.build_serialized_engine(onnx_path, profile, precision, log=cache.log)

                path, _built = cache.get_or_build(model.manifest.name, model.manifest.version, i, key, build)
                self.engine_paths.append(path)
                self._runners.append(trt_engine.EngineRunner(path, max_batch_size, device=index))
        except BaseException:
            self.close()
            raise

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self._sizes[stage])
        runner = self._runners[stage]
        if x.shape[0] == 0:
            return np.zeros((0, runner.output_width), dtype=np.float32)
        parts = [
            runner.run(x[i : i + self.max_batch_size]) for i in range(0, x.shape[0], self.max_batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def warmup(self, max_batch_size: int) -> None:
        for stage, size in enumerate(self._sizes):
            for n in sorted({1, min(max_batch_size, self.max_batch_size)}):
                self.run(stage, np.zeros((n, 3, size, size), dtype=np.float32))

    def close(self) -> None:
        for runner in self._runners:
            runner.close()
        self._runners.clear()
