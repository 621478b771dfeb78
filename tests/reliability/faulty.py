"""A fault-injecting wrapper around the real ONNX Runtime backend, and a ``serve`` that uses it.

``python -m tests.reliability.faulty`` runs the real service (uvicorn, real models, real ONNX
Runtime) with every onnxruntime backend wrapped by :class:`FaultyBackend`, configured by:

- ``WINGMARK_FAULT_MODE``: ``none`` | ``raise`` | ``stall``: what a batch holding a *poison* face does.
  A poison face is a stage-1 crop that is constant in every channel (a flat grey image with a box
  inside it); the backend raises RuntimeError, or sleeps ``WINGMARK_FAULT_STALL_S`` before answering.
- ``WINGMARK_FAULT_DELAY_MS``: extra time every stage-1 batch takes (a device slower than the
  clients, so that overload is reachable on a small CPU machine).
- ``WINGMARK_FAULT_LOG``: a JSONL file that gets one line per stage-1 batch:
  ``{"size": N, "poison": P, "failed": bool}``.

This is test code: the fault is fake, everything around it is the production path.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import numpy as np

from model_store.store import ModelVersion
from runtime.backends.onnxruntime import OnnxRuntimeBackend

__all__ = ["FaultyBackend", "is_poison", "main"]


def is_poison(batch: np.ndarray) -> np.ndarray:
    """[N, 3, S, S] -> [N] bool: rows whose every channel is constant."""
    flat = np.asarray(batch).reshape(batch.shape[0], batch.shape[1], -1)
    return np.asarray(np.ptp(flat, axis=2).max(axis=1) < 1e-6)


class FaultyBackend(OnnxRuntimeBackend):
    name = "onnxruntime"

    def __init__(self, model: ModelVersion, **options: Any) -> None:
        super().__init__(model, **options)
        self.mode = os.environ.get("WINGMARK_FAULT_MODE", "none")
        self.stall_s = float(os.environ.get("WINGMARK_FAULT_STALL_S", "2"))
        self.delay_s = float(os.environ.get("WINGMARK_FAULT_DELAY_MS", "0")) / 1000.0
        self.log_path = os.environ.get("WINGMARK_FAULT_LOG")
        self._lock = threading.Lock()
        self._warm = False

    def warmup(self, max_batch_size: int) -> None:
        super().warmup(max_batch_size)
        self._warm = True

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        if stage != 0 or not self._warm:
            return super().run(stage, batch)
        poison = int(is_poison(batch).sum())
        failed = poison > 0 and self.mode == "raise"
        if self.log_path:
            with self._lock, open(self.log_path, "a") as f:
                f.write(json.dumps({"size": int(batch.shape[0]), "poison": poison, "failed": failed}) + "\n")
        if self.delay_s:
            time.sleep(self.delay_s)
        if failed:
            raise RuntimeError(f"injected fault: {poison} poison crop(s) in a batch of {batch.shape[0]}")
        if poison and self.mode == "stall":
            time.sleep(self.stall_s)
        return super().run(stage, batch)


def main() -> int:
    from runtime.backends import BACKENDS
    from service.server import serve_main

    BACKENDS["onnxruntime"] = "tests.reliability.faulty:FaultyBackend"
    return serve_main([])


if __name__ == "__main__":
    raise SystemExit(main())
