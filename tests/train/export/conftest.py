"""Shared by the export tests: a published version served by the runtime (ONNX Runtime, CPU) on the
synthetic set its manifest was evaluated on, and a stand-in stage network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_store.store import ModelVersion
from runtime import Landmarker
from runtime.backends import create_backend
from train.export.evaluate import evaluate_landmarker, load_synthetic


def linear_net(weights: np.ndarray, size: int) -> onnx.ModelProto:
    """input [N, 3, size, size] -> Flatten -> MatMul -> output [N, 2K] (a stand-in stage network)."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["output"]),
        ],
        "net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def serve_recorded_set(version: ModelVersion, batch_size: int = 16) -> dict[str, Any]:
    """``evaluate_landmarker`` of ``version`` in batches of ``batch_size`` on its manifest's validation set
    (``evaluation.dataset``, synthetic), through the runtime's ONNX Runtime backend."""
    m = version.manifest
    samples = load_synthetic(dict(m.evaluation["dataset"]), m.scheme)
    backend = create_backend("onnxruntime", version, device="cpu", max_batch_size=batch_size)
    landmarker = Landmarker(version, backend)
    try:
        return evaluate_landmarker(landmarker, samples, batch_size=batch_size)
    finally:
        landmarker.close()


@pytest.fixture
def served() -> Callable[..., dict[str, Any]]:
    return serve_recorded_set
