"""Inference backends: one small interface, several runtimes.

A backend runs the stages of one model version on batches of network input::

    backend.run(stage, batch)  # stage: index into manifest.stages; [N, 3, S, S] float32 -> [N, 2K] float32

Every backend module exposes a class taking ``(model: ModelVersion, *, device: str, max_batch_size: int,
**options)``; :func:`create_backend` imports the module only when that kind is asked for, so the CPU
serving path never imports torch or TensorRT.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model_store.store import ModelVersion

__all__ = ["BACKENDS", "Backend", "BackendUnavailableError", "create_backend"]


@runtime_checkable
class Backend(Protocol):
    """What the device worker needs from a runtime (see CONTRACT.md)."""

    name: str

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        """[N, 3, S, S] float32 network input of ``manifest.stages[stage]`` -> [N, 2K] float32 crop units."""
        ...

    def warmup(self, max_batch_size: int) -> None:
        """Run every stage once at batch size 1 and ``max_batch_size`` so the first request is not slow."""
        ...

    def close(self) -> None:
        """Release sessions, engines and device memory."""
        ...


class BackendUnavailableError(RuntimeError):
    """The runtime or a file it needs is not present on this machine (the reason is the message)."""


# kind -> "module:Class"
BACKENDS: dict[str, str] = {
    "onnxruntime": "service.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "service.backends.tensorrt:TensorRTBackend",
    "torch": "service.backends.torch:TorchBackend",
}


def create_backend(
    kind: str, model: ModelVersion, *, device: str = "cpu", max_batch_size: int = 64, **options: Any
) -> Backend:
    """Build the backend ``kind`` (onnxruntime | tensorrt | torch) for ``model``.

    Raises ValueError for an unknown kind and BackendUnavailableError when the runtime is missing.
    """
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; known: {sorted(BACKENDS)}")
    module_name, class_name = BACKENDS[kind].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {kind!r} cannot be imported: {exc}") from exc
    cls = getattr(module, class_name)
    backend: Backend = cls(model, device=device, max_batch_size=max_batch_size, **options)
    return backend


def check_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """Validate a stage input [N, 3, S, S] and return it as contiguous float32."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != (3, size, size):
        raise ValueError(f"expected a batch [N, 3, {size}, {size}], got {tuple(x.shape)}")
    return x
