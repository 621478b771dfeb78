"""TensorRT engines for model stages: build from ONNX, cache, run, check, benchmark.

No torch import here: the GPU service uses this module to build or load its engines at start-up.

Requirements (GPU hosts only; imported lazily, so this module imports on any machine):

- ``tensorrt`` >= 10 (the TensorRT 10 Python API: tensor-name based I/O with ``set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3``; explicit batch networks);
- ``cuda-python`` >= 12 for device memory and streams (``cuda.bindings.runtime``, or the older
  ``cuda.cudart`` layout). Host arrays are plain numpy arrays; copies go through ``cudaMemcpyAsync``
  on one stream per runner.

Engine cache
------------
An engine is only valid for the GPU architecture (compute capability), the TensorRT version, the
precision and the optimisation profile it was built with, and for the exact ONNX file. Each cached
engine ``<root>/<model>/<version>/stage<i>_<precision>_sm<cc>_trt<version>_b<min>-<opt>-<max>.engine``
has a sidecar JSON (same name + ``.json``) holding the full :class:`EngineKey` (including the ONNX
file's sha256) and the engine file's own sha256. :func:`check_cached_engine` accepts an engine only
when every key field matches and the engine file is intact; anything else (an ONNX file republished
under the same version, another TensorRT release, a truncated file, a missing sidecar) is reported
with a reason and the engine is rebuilt, never loaded. The cache root is ``$WINGMARK_ENGINE_CACHE``,
default ``~/.cache/wingmark/engines``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from model_store.manifest import atomic_write_bytes

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
    "TensorRTUnavailable",
    "benchmark_runner",
    "build_serialized_engine",
    "check_cached_engine",
    "cuda_available",
    "default_cache_dir",
    "device_compute_capability",
    "engine_path_for",
    "import_cudart",
    "import_tensorrt",
    "sha256_file",
    "tensorrt_version",
    "write_cache_entry",
]

CACHE_ENV = "WINGMARK_ENGINE_CACHE"
PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1
# Identifier of the calibration set ``wingmark build-engine --precision int8`` uses by default
# (synthetic validation crops; see train.export.cli); part of an INT8 engine's cache key.
DEFAULT_INT8_CALIBRATION = "synthetic:n=512:seed=20180618"


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a CUDA device is missing on this machine."""


# --------------------------------------------------------------------------------------------
# Pure-Python cache logic (unit-tested without TensorRT)
# --------------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$WINGMARK_ENGINE_CACHE`` or ``~/.cache/wingmark/engines``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wingmark" / "engines"


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile over the batch axis: ``1 <= min <= opt <= max``."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    @classmethod
    def for_max(cls, max_batch: int, opt: int | None = None) -> BatchProfile:
        """Profile with min 1, the given max and ``opt`` (default: max/4 rounded, at least 1)."""
        return cls(1, opt if opt is not None else max(1, min(max_batch, max_batch // 4)), max_batch)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on. Two engines are interchangeable iff keys are equal.

    ``input_shape`` is ``(C, S, S)`` without the batch axis; ``calibration`` identifies the INT8
    calibration set (``None`` for fp32/fp16).
    """

    onnx_sha256: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profile: BatchProfile
    input_shape: tuple[int, int, int]
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8" and not self.calibration:
            raise ValueError("an int8 engine key needs a calibration identifier")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ValueError("onnx_sha256 must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        return cls(
            onnx_sha256=str(data["onnx_sha256"]),
            compute_capability=str(data["compute_capability"]),
            tensorrt_version=str(data["tensorrt_version"]),
            precision=str(data["precision"]),
            profile=BatchProfile(**data["profile"]),
            input_shape=(
                int(data["input_shape"][0]),
                int(data["input_shape"][1]),
                int(data["input_shape"][2]),
            ),
            calibration=data.get("calibration"),
        )

    def slot(self) -> str:
        """File-name stem: the fields that may legitimately coexist in one cache (the ONNX hash is
        not part of it: a new ONNX file under the same model version replaces the old engine)."""
        cc = re.sub(r"[^0-9A-Za-z]", "", self.compute_capability)
        trt = re.sub(r"[^0-9A-Za-z.]", "", self.tensorrt_version)
        p = self.profile
        return f"{self.precision}_sm{cc}_trt{trt}_b{p.min}-{p.opt}-{p.max}"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def engine_path_for(root: Path, model: str, version: str, stage: int, key: EngineKey) -> Path:
    """Cache location of the engine for ``stage`` (0-based) of ``model``/``version`` under ``key``."""
    for part in (model, version):
        if not _SAFE.match(part) or ".." in part:
            raise ValueError(f"unsafe name for an engine cache path: {part!r}")
    if stage < 0:
        raise ValueError("stage index must be >= 0")
    return Path(root) / model / version / f"stage{stage}_{key.slot()}.engine"


def _sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class CacheCheck:
    """Whether a cached engine may be loaded, and why not."""

    usable: bool
    reason: str


def check_cached_engine(engine_path: Path, key: EngineKey, verify_checksum: bool = True) -> CacheCheck:
    """Decide whether the engine at ``engine_path`` was built for exactly ``key`` and is intact."""
    engine_path = Path(engine_path)
    sidecar = _sidecar(engine_path)
    if not engine_path.is_file():
        return CacheCheck(False, "no cached engine")
    if not sidecar.is_file():
        return CacheCheck(False, "engine has no sidecar key file")
    try:
        data = json.loads(sidecar.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            return CacheCheck(False, f"sidecar format {data.get('format')!r} != {SIDECAR_FORMAT}")
        cached = EngineKey.from_dict(data["key"])
        recorded_sha = str(data["engine_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        return CacheCheck(False, f"unreadable sidecar: {exc}")
    if cached != key:
        wanted, have = key.to_dict(), cached.to_dict()
        diffs = [
            f"{name}: cached {have[name]!r} != wanted {wanted[name]!r}"
            for name in wanted
            if wanted[name] != have[name]
        ]
        stale = "onnx_sha256" in {d.split(":")[0] for d in diffs}
        return CacheCheck(
            False, ("stale (ONNX file changed); " if stale else "key mismatch; ") + "; ".join(diffs)
        )
    if verify_checksum and sha256_file(engine_path) != recorded_sha:
        return CacheCheck(False, "engine file checksum differs from its sidecar (corrupt or modified)")
    return CacheCheck(True, "cache hit")


def write_cache_entry(
    engine_path: Path, engine: bytes, key: EngineKey, info: dict[str, Any] | None = None
) -> None:
    """Write ``engine`` and its sidecar atomically. The old sidecar is removed first and the new one
    written last, so a crash in between leaves an engine without a sidecar (rejected), never an
    engine with a wrong key."""
    engine_path = Path(engine_path)
    sidecar = _sidecar(engine_path)
    sidecar.unlink(missing_ok=True)
    atomic_write_bytes(engine_path, engine)
    payload = {
        "format": SIDECAR_FORMAT,
        "key": key.to_dict(),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "info": info or {},
    }
    atomic_write_bytes(sidecar, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class EngineCache:
    """Engine cache rooted at ``root`` (default :func:`default_cache_dir`)."""

    root: Path = field(default_factory=default_cache_dir)
    log: Callable[[str], None] = print

    def get_or_build(
        self, model: str, version: str, stage: int, key: EngineKey, build: Callable[[], bytes]
    ) -> tuple[Path, bool]:
        """Path of a valid engine for ``key``, building it with ``build()`` unless cached.

        Returns ``(path, built)``; ``built`` is False on a cache hit.
        """
        path = engine_path_for(self.root, model, version, stage, key)
        check = check_cached_engine(path, key)
        if check.usable:
            self.log(f"engine cache hit: {path}")
            return path, False
        self.log(f"building engine {path.name} ({check.reason})")
        started = time.perf_counter()
        engine = build()
        write_cache_entry(path, engine, key, {"build_seconds": round(time.perf_counter() - started, 3)})
        return path, True


# --------------------------------------------------------------------------------------------
# Lazy imports and device facts
# --------------------------------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """``import tensorrt`` (>= 10), or :class:`TensorRTUnavailable` with the reason."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({exc}); install it from NVIDIA's index or use the GPU image"
        ) from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; the TensorRT 10 API is required")
    return trt


def import_cudart() -> ModuleType:
    """The cuda-python runtime module (new ``cuda.bindings.runtime`` or old ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise TensorRTUnavailable(f"cuda-python is not installed ({exc})") from exc
    return cudart


def _cuda_call(result: Any) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on a non-zero error code."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err!r}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_available() -> tuple[bool, str]:
    """``(True, description)`` when TensorRT, cuda-python and a CUDA device are all present, else
    ``(False, reason)``. Never raises."""
    try:
        trt = import_tensorrt()
        cudart = import_cudart()
        count = _cuda_call(cudart.cudaGetDeviceCount())
    except (TensorRTUnavailable, RuntimeError) as exc:
        return False, str(exc)
    if not count:
        return False, "no CUDA device found"
    capability = device_compute_capability(0)
    return True, f"{count} CUDA device(s), TensorRT {trt.__version__}, compute capability {capability}"


def device_compute_capability(device: int = 0) -> str:
    """``"major.minor"`` of CUDA device ``device``."""
    cudart = import_cudart()
    major = _cuda_call(
        cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device)
    )
    minor = _cuda_call(
        cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device)
    )
    return f"{int(major)}.{int(minor)}"


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _make_calibrator(
    trt: ModuleType, batches: Iterable[np.ndarray], cache_path: Path, batch_size: int
) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``[B, 3, S, S]`` float32 batches from device memory.

    The calibration cache at ``cache_path`` is read when present (so a rebuild of the same ONNX file
    skips calibration) and written after calibration.
    """
    cudart = import_cudart()

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._iter: Iterator[np.ndarray] = iter(batches)
            self._device: int | None = None
            self._nbytes = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            try:
                batch = np.ascontiguousarray(next(self._iter), dtype=np.float32)
            except StopIteration:
                return None
            if self._device is None or batch.nbytes > self._nbytes:
                if self._device is not None:
                    _cuda_call(cudart.cudaFree(self._device))
                self._device = int(_cuda_call(cudart.cudaMalloc(batch.nbytes)))
                self._nbytes = batch.nbytes
            _cuda_call(
                cudart.cudaMemcpy(
                    self._device,
                    batch.ctypes.data,
                    batch.nbytes,
                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                )
            )
            return [self._device]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

        def __del__(self) -> None:
            if self._device is not None:
                with contextlib.suppress(Exception):
                    cudart.cudaFree(self._device)

    return _Calibrator()


def build_serialized_engine(
    onnx_path: Path,
    profile: BatchProfile,
    precision: str = "fp16",
    *,
    calibration_batches: Iterable[np.ndarray] | None = None,
    calibration_cache: Path | None = None,
    workspace_bytes: int = 1 << 30,
    log: Callable[[str], None] = print,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine with one optimisation profile on the batch
    axis of its (single) input.

    ``precision``: "fp32", "fp16" (default) or "int8" (INT8 with FP16 fallback; needs
    ``calibration_batches`` of ``[B, 3, S, S]`` float32 or an existing ``calibration_cache``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors))
    if network.num_inputs != 1:
        raise RuntimeError(f"expected one network input, found {network.num_inputs}")
    tensor = network.get_input(0)
    _, channels, height, width = tuple(tensor.shape)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        tensor.name,
        (profile.min, channels, height, width),
        (profile.opt, channels, height, width),
        (profile.max, channels, height, width),
    )
    config.add_optimization_profile(opt_profile)
    if precision in {"fp16", "int8"}:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibration_cache is None:
            raise ValueError("int8 needs a calibration cache path")
        if calibration_batches is None and not calibration_cache.is_file():
            raise ValueError("int8 needs calibration batches or an existing calibration cache")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(
            trt, calibration_batches or [], calibration_cache, batch_size=profile.opt
        )
        config.set_calibration_profile(opt_profile)
    log(
        f"TensorRT {trt.__version__}: building {precision} engine for {Path(onnx_path).name}, batch {profile}"
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path}")
    return bytes(serialized)


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
        _cuda_call(cudart.cudaSetDevice(device))
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
        self._d_in = int(_cuda_call(cudart.cudaMalloc(self._in_bytes)))
        self._d_out = int(_cuda_call(cudart.cudaMalloc(self._out_bytes)))
        self._stream = _cuda_call(cudart.cudaStreamCreate())
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
        _cuda_call(cudart.cudaMemcpyAsync(self._d_in, host_in.ctypes.data, host_in.nbytes, h2d, self._stream))
        if not self._context.set_input_shape(self.input_name, tuple(host_in.shape)):
            raise RuntimeError(f"engine rejected input shape {host_in.shape}")
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _cuda_call(
            cudart.cudaMemcpyAsync(host_out.ctypes.data, self._d_out, host_out.nbytes, d2h, self._stream)
        )
        _cuda_call(cudart.cudaStreamSynchronize(self._stream))
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
