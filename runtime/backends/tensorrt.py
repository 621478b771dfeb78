"""TensorRT backend (GPU): one engine per stage, built from the stage's ONNX file on first use and
cached by GPU compute capability, TensorRT version, precision and batch profile.

TensorRT and cuda-python are imported when the backend is built, never at module import; torch is
never imported. The engine cache is :mod:`runtime.backends.tensorrt_engines`, the builder
:mod:`runtime.backends.tensorrt_build` (both shared with ``wingmark build-engine``, so an engine built
offline by the CLI is the one the service finds in the cache); the runner is here. This module
re-exports the names of all three. A cached engine whose key differs (other GPU, other
TensorRT, ONNX file republished) is rebuilt, never loaded.

Options (``create_backend("tensorrt", model, device="cuda:0", max_batch_size=64, **options)``):
``precision`` ("fp16" default, "fp32"; "int8" only with an engine already in the cache, built by
``wingmark build-engine --precision int8``, since the service has no calibration data),
``calibration`` (the INT8 calibration-set identifier of that engine, default the CLI's default),
``opt_batch_size`` (profile optimum, default max/4), ``cache_dir`` (default
``$WINGMARK_ENGINE_CACHE`` or ``~/.cache/wingmark/engines``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.store import ModelVersion
from runtime.backends import BackendUnavailableError, check_batch
from runtime.backends.tensorrt_build import (
    build_serialized_engine,
    cuda_available,
    cuda_call,
    device_compute_capability,
    import_cudart,
    import_tensorrt,
    tensorrt_version,
)
from runtime.backends.tensorrt_engines import (
    CACHE_ENV,
    DEFAULT_INT8_CALIBRATION,
    PRECISIONS,
    SIDECAR_FORMAT,
    BatchProfile,
    CacheCheck,
    EngineCache,
    EngineKey,
    TensorRTUnavailable,
    check_cached_engine,
    default_cache_dir,
    engine_key,
    engine_path_for,
    write_cache_entry,
)

__all__ = [
    "CACHE_ENV",
    "DEFAULT_INT8_CALIBRATION",
    "PRECISIONS",
    "SIDECAR_FORMAT",
    "BatchProfile",
    "CacheCheck",
    "EngineCache",
    "EngineKey",
    "EngineRunner",
    "TensorRTBackend",
    "TensorRTUnavailable",
    "benchmark_runner",
    "build_serialized_engine",
    "check_cached_engine",
    "cuda_available",
    "cuda_call",
    "default_cache_dir",
    "device_compute_capability",
    "engine_key",
    "engine_path_for",
    "import_cudart",
    "import_tensorrt",
    "prebuild_main",
    "tensorrt_version",
    "write_cache_entry",
]


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
        index = _device_index(device)
        ok, reason = cuda_available()
        if not ok:
            raise BackendUnavailableError(f"TensorRT backend unavailable: {reason}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model
        self.max_batch_size = max_batch_size
        self.precision = precision
        cache = EngineCache(
            Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            log=log or (lambda _msg: None),
        )
        profile = BatchProfile.for_max(max_batch_size, opt_batch_size)
        capability = device_compute_capability(index)
        version = tensorrt_version()
        self._sizes = [stage.input_size for stage in model.manifest.stages]
        self._runners: list[Any] = []
        self.engine_paths: list[Path] = []
        try:
            for i, stage in enumerate(model.manifest.stages):
                onnx_path = model.path / stage.file
                key = engine_key(
                    onnx_path,
                    stage.input_size,
                    compute_capability=capability,
                    tensorrt_version=version,
                    precision=precision,
                    profile=profile,
                    calibration=calibration,
                )

                def build(onnx_path: Path = onnx_path) -> bytes:
                    if precision == "int8":
                        raise BackendUnavailableError(
                            "no cached INT8 engine: build it with 'wingmark build-engine --precision int8'"
                        )
                    return build_serialized_engine(onnx_path, profile, precision, log=cache.log)

                path, _built = cache.get_or_build(model.manifest.name, model.manifest.version, i, key, build)
                self.engine_paths.append(path)
                self._runners.append(EngineRunner(path, max_batch_size, device=index))
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


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class EngineRunner:
    """Runs one deserialized engine: numpy ``[N, 3, S, S]`` in, numpy ``[N, D]`` out, ``N <= max``.

    Device buffers for the largest batch are allocated once (cuda-python ``cudaMalloc``); every
    call copies the input to the device, sets the input shape, enqueues with ``execute_async_v3``
    on the runner's stream and copies the output back.
    """

    def __init__(self, engine: bytes | Path, max_batch_size: int, device: int = 0) -> None:
        trt = import_tensorrt()
        self._cudart = cudart = import_cudart()
        cuda_call(cudart.cudaSetDevice(device))
        self.device = device
        data = Path(engine).read_bytes() if isinstance(engine, Path) else engine
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise RuntimeError(f"expected one input and one output tensor, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        _min, _opt, max_shape = self._engine.get_tensor_profile_shape(self.input_name, 0)
        profile_max = int(max_shape[0])
        if max_batch_size > profile_max:
            raise ValueError(f"max batch {max_batch_size} exceeds the engine profile's max {profile_max}")
        self.max_batch_size = max_batch_size
        in_shape = tuple(int(d) for d in self._engine.get_tensor_shape(self.input_name))
        self.sample_shape = in_shape[1:]
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.input_name)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.output_name)))
        self._context.set_input_shape(self.input_name, (max_batch_size, *self.sample_shape))
        out_shape = tuple(int(d) for d in self._context.get_tensor_shape(self.output_name))
        self.output_width = int(np.prod(out_shape[1:]))
        self._in_bytes = max_batch_size * int(np.prod(self.sample_shape)) * self._in_dtype.itemsize
        self._out_bytes = max_batch_size * self.output_width * self._out_dtype.itemsize
        self._d_in = int(cuda_call(cudart.cudaMalloc(self._in_bytes)))
        self._d_out = int(cuda_call(cudart.cudaMalloc(self._out_bytes)))
        self._stream = cuda_call(cudart.cudaStreamCreate())
        self._context.set_tensor_address(self.input_name, self._d_in)
        self._context.set_tensor_address(self.output_name, self._d_out)
        self._closed = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``[N, 3, S, S]`` -> ``[N, D]`` float32 for ``1 <= N <= max_batch_size``."""
        if self._closed:
            raise RuntimeError("runner is closed")
        n = int(batch.shape[0])
        if tuple(batch.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"expected [N, {', '.join(map(str, self.sample_shape))}], got {list(batch.shape)}"
            )
        if not 1 <= n <= self.max_batch_size:
            raise ValueError(f"batch size {n} outside 1..{self.max_batch_size}")
        cudart = self._cudart
        host_in = np.ascontiguousarray(batch, dtype=self._in_dtype)
        host_out = np.empty((n, self.output_width), dtype=self._out_dtype)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaMemcpyAsync(self._d_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream))
        if not self._context.set_input_shape(self.input_name, tuple(host_in.shape)):
            raise RuntimeError(f"engine rejected input shape {host_in.shape}")
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        cuda_call(
            cudart.cudaMemcpyAsync(host_out.ctypes.data, self._d_out, host_out.nbytes, d2h, self._stream)
        )
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return host_out.astype(np.float32, copy=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cudart = self._cudart
        with contextlib.suppress(Exception):
            cudart.cudaStreamSynchronize(self._stream)
        for ptr in (self._d_in, self._d_out):
            with contextlib.suppress(Exception):
                cudart.cudaFree(ptr)
        with contextlib.suppress(Exception):
            cudart.cudaStreamDestroy(self._stream)
        self._context = None
        self._engine = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def benchmark_runner(
    run: Callable[[np.ndarray], np.ndarray],
    sample_shape: tuple[int, ...],
    batch_sizes: Sequence[int],
    *,
    seconds: float = 1.0,
    warmup: int = 5,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Throughput of ``run`` per batch size: ``[{batch_size, faces_per_s, latency_ms, iterations}]``.

    Each batch size is warmed up, then run repeatedly for about ``seconds``; latency is the median
    per-call wall time including host<->device copies.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, float]] = []
    for n in batch_sizes:
        batch = rng.normal(size=(n, *sample_shape)).astype(np.float32)
        for _ in range(warmup):
            run(batch)
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            t0 = time.perf_counter()
            run(batch)
            times.append(time.perf_counter() - t0)
        median = float(np.median(times))
        rows.append(
            {
                "batch_size": float(n),
                "latency_ms": median * 1e3,
                "faces_per_s": n / median,
                "iterations": float(len(times)),
            }
        )
    return rows


def prebuild_main(argv: list[str]) -> int:
    """``wingmark engines MODEL``: build (or find) the engines the service will load, then exit.

    Torch-free, so it runs in the GPU image (compose's ``build-engines`` one-shot): the same backend,
    cache key and profile as ``WINGMARK_BACKEND=tensorrt`` with this ``--max-batch``. ``wingmark
    build-engine`` (train.export.cli, the training extra) adds the ONNX Runtime check, INT8 and benchmarks.
    """
    import argparse
    import sys

    from model_store.store import ModelStore

    parser = argparse.ArgumentParser(prog="wingmark engines", description=prebuild_main.__doc__)
    parser.add_argument("model", help="model name in the store, e.g. cnn67-ibug68")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--store", type=Path, help="model store root (default $WINGMARK_MODEL_ROOT)")
    parser.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    parser.add_argument("--max-batch", type=int, default=32, help="profile max batch size (the service's)")
    parser.add_argument("--opt-batch", type=int, help="profile optimum batch size (default max/4)")
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default $WINGMARK_ENGINE_CACHE)")
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args(argv)
    ok, reason = cuda_available()
    if not ok:
        print(f"wingmark engines: {reason}", file=sys.stderr)
        return 3
    store = ModelStore(args.store)
    model = store.resolve(args.model, args.version)
    store.verify(model)
    backend = TensorRTBackend(
        model, device=args.device, max_batch_size=args.max_batch, precision=args.precision,
        opt_batch_size=args.opt_batch, cache_dir=args.cache_dir, log=print,
    )  # fmt: skip
    try:
        for path in backend.engine_paths:
            print(path)
    finally:
        backend.close()
    return 0
