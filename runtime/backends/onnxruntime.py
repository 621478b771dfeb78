"""ONNX Runtime backend (the CPU default; CUDA through onnxruntime-gpu where installed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from model_store.store import ModelVersion
from runtime.backends import BackendUnavailableError, check_batch

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    """One InferenceSession per stage; inputs with a dynamic batch axis."""

    name = "onnxruntime"

    def __init__(
        self,
        model: ModelVersion,
        *,
        device: str = "cpu",
        max_batch_size: int = 64,
        threads: int = 1,
        spinning: bool = True,
        **_: Any,
    ) -> None:
        import onnxruntime as ort

        self.model = model
        self.max_batch_size = max_batch_size
        if device == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("onnxruntime has no CUDAExecutionProvider on this machine")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            raise ValueError(f"unknown device {device!r} (cpu, cuda, cuda:N)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if (
            not spinning
        ):  # idle ORT workers sleep instead of busy-waiting: leaves the cores to the other threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions = []
        self._input_names: list[str] = []
        for stage in model.manifest.stages:
            session = ort.InferenceSession(str(model.path / stage.file), options, providers=providers)
            self._sessions.append(session)
            self._input_names.append(session.get_inputs()[0].name)
        self._sizes = [s.input_size for s in model.manifest.stages]

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self._sizes[stage])
        (out,) = self._sessions[stage].run(None, {self._input_names[stage]: x})[:1]
        return np.asarray(out, dtype=np.float32)

    def warmup(self, max_batch_size: int) -> None:
        for stage, size in enumerate(self._sizes):
            for n in sorted({1, max_batch_size}):
                self.run(stage, np.zeros((n, 3, size, size), dtype=np.float32))

    def close(self) -> None:
        self._sessions.clear()
