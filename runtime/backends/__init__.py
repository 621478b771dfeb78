"""Inference backends: one small interface, several runtimes.

A backend runs the stages of one model version on batches of network input::

    backend.run(stage, batch)  # stage: index into manifest.stages; [N, 3, S, S] float32 -> [N, 2K] float32

Every backend module exposes a class taking ``(model: ModelVersion, *, device: str, max_batch_size: int,
**options)``; :func:`create_backend` imports the module only when that kind is asked for, so the CPU
serving path never imports TensorRT. The runtime's own kinds are ``onnxruntime`` and ``tensorrt``; a
layer above adds more with :func:`register_backend` (``train.backends`` adds the PyTorch reference
backend, ``torch``, which the runtime and the service never import).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model_store.store import ModelVersion

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "check_batch",
    "create_backend",
    "register_backend",
]


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


# kind -> "module:Class" (imported on first use)
BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "runtime.backends.tensorrt:TensorRTBackend",
}


def register_backend(kind: str, target: str) -> None:
    """Make ``create_backend(kind, ...)`` build ``target`` ("package.module:Class", imported on first use)."""
    if BACKENDS.get(kind, target) != target:
        raise ValueError(f"backend kind {kind!r} is taken by {BACKENDS[kind]}")
    BACKENDS[kind] = target


def create_backend(
    kind: str, model: ModelVersion, *, device: str = "cpu", max_batch_size: int = 64, **options: Any
) -> Backend:
    """Build the backend ``kind`` (onnxruntime | tensorrt | one registered above) for ``model``.

    Raises ValueError for an unknown kind and BackendUnavailableError when the runtime is missing.
    """
    if kind not in BACKENDS:
        hint = " (the torch backend: import train.backends first)" if kind == "torch" else ""
        raise ValueError(f"unknown backend {kind!r}; known: {sorted(BACKENDS)}{hint}")
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
