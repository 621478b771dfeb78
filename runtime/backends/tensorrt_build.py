"""TensorRT engines for model stages, part 2: lazy imports of TensorRT and cuda-python, device facts,
and the engine builder (ONNX -> serialized engine, INT8 calibration included).

Torch-free, so the GPU image builds its engines at start-up without ``train/``; ``wingmark
build-engine`` (train.export.cli) uses the same builder, so an engine it builds offline is the one
the service finds in the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from model_store.manifest import atomic_write_bytes
from runtime.backends.tensorrt_engines import PRECISIONS, BatchProfile, TensorRTUnavailable

__all__ = [
    "build_serialized_engine",
    "cuda_available",
    "cuda_call",
    "device_compute_capability",
    "import_cudart",
    "import_tensorrt",
    "tensorrt_version",
]

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


def cuda_call(result: Any) -> Any:
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
        count = cuda_call(cudart.cudaGetDeviceCount())
    except (TensorRTUnavailable, RuntimeError) as exc:
        return False, str(exc)
    if not count:
        return False, "no CUDA device found"
    capability = device_compute_capability(0)
    return True, f"{count} CUDA device(s), TensorRT {trt.__version__}, compute capability {capability}"


def device_compute_capability(device: int = 0) -> str:
    """``"major.minor"`` of CUDA device ``device``."""
    cudart = import_cudart()
    major = cuda_call(
        cudart.cudaDeviceGetAttribute(cudart.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device)
    )
    minor = cuda_call(
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
                    cuda_call(cudart.cudaFree(self._device))
                self._device = int(cuda_call(cudart.cudaMalloc(batch.nbytes)))
                self._nbytes = batch.nbytes
            cuda_call(
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
