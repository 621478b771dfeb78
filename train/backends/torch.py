"""PyTorch reference backend (parity checks; never used on the CPU serving path).

torch is imported when the backend is built, not when this module is imported. Each stage
needs the ``checkpoint`` file the manifest names beside its ONNX file: a TorchScript archive
(``torch.jit.save``), loaded without any model code; or a training checkpoint (train.loop's dict:
``model`` state dict, ``architecture``, ``model_kwargs``, ``num_points``), rebuilt through
``train.models.create_model``.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from model_store.schemes import get_scheme
from model_store.store import ModelVersion
from runtime.backends import BackendUnavailableError, check_batch

__all__ = ["TorchBackend"]


class TorchBackend:
    name = "torch"

    def __init__(
        self, model: ModelVersion, *, device: str = "cpu", max_batch_size: int = 64, **_: Any
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("torch is not installed (pip install -e '.[train]')") from exc
        self._torch = torch
        self.device = torch.device(device)
        self._sizes = [s.input_size for s in model.manifest.stages]
        self._modules: list[Any] = []
        for stage in model.manifest.stages:
            if not stage.checkpoint:
                raise BackendUnavailableError(
                    f"{model.name}/{model.version} stage {stage.name!r} names no PyTorch checkpoint"
                )
            path = model.path / stage.checkpoint
            if not path.is_file():
                raise BackendUnavailableError(f"checkpoint missing: {path}")
            module = self._load(path, stage.architecture, get_scheme(model.manifest.scheme).num_points)
            self._modules.append(module.to(self.device).eval())

    def _load(self, path: Any, architecture: str, num_points: int) -> Any:
        torch = self._torch
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:
            pass  # not TorchScript: a training checkpoint (train.loop's format)
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        try:
            create_model = importlib.import_module("train.models").create_model
        except (ImportError, AttributeError) as exc:
            raise BackendUnavailableError(f"cannot rebuild {architecture!r}: {exc}") from exc
        module = create_model(
            checkpoint.get("architecture", architecture),
            int(checkpoint.get("num_points", num_points)),
            **dict(checkpoint.get("model_kwargs") or {}),
        )
        module.load_state_dict(checkpoint.get("model", checkpoint.get("state_dict")))
        return module

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(check_batch(batch, self._sizes[stage])).to(self.device)
        with torch.inference_mode():
            out = self._modules[stage](x)
        return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

    def warmup(self, max_batch_size: int) -> None:
        for stage, size in enumerate(self._sizes):
            self.run(stage, np.zeros((max(1, max_batch_size), 3, size, size), dtype=np.float32))

    def close(self) -> None:
        self._modules.clear()
