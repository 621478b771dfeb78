"""Real, small ONNX test models for the service tests (tests only: uses the ``onnx`` package).

Each stage is conv(3->4, 3x3, stride 2) -> ReLU -> GlobalAveragePool -> Flatten -> Gemm(4 -> 2K),
with a dynamic batch axis and deterministic weights. The Gemm bias is a plausible mean face in
crop units (the tight landmark box spans [0.1, 0.9] of the crop under the default 1.25 crop rule),
and the weights are small, so predictions stay near the mean face and inside the face box while
still depending on the pixels (so batching mistakes would show).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store.manifest import BoxCalibrationSpec, Manifest, StageSpec, sha256_file
from model_store.schemes import get_scheme
from model_store.store import ModelStore, ModelVersion

__all__ = ["CHANNELS", "mean_face", "publish_test_model", "stage_seed", "stage_weights", "write_stage_onnx"]

CHANNELS = 4


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int) -> np.ndarray:
    t = np.linspace(start, stop, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def mean_face(scheme_name: str) -> np.ndarray:
    """[K, 2] a frontal mean face in crop units (subject's right on the image's left)."""
    pts = np.zeros((68, 2))
    pts[0:17, 0] = 0.5 - 0.37 * np.cos(np.linspace(0.0, math.pi, 17))
    pts[0:17, 1] = 0.42 + 0.44 * np.sin(np.linspace(0.0, math.pi, 17))  # jaw, top-left -> chin -> top-right
    pts[17:22] = np.stack([np.linspace(0.18, 0.44, 5), [0.30, 0.27, 0.26, 0.27, 0.29]], axis=1)
    pts[22:27] = np.stack([np.linspace(0.56, 0.82, 5), [0.29, 0.27, 0.26, 0.27, 0.30]], axis=1)
    pts[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.36, 0.56, 4)], axis=1)
    pts[31:36] = np.stack([np.linspace(0.42, 0.58, 5), [0.60, 0.62, 0.63, 0.62, 0.60]], axis=1)
    eye = _ellipse(0.0, 0.0, 0.07, 0.025, math.pi, 3 * math.pi, 7)[:6]
    pts[36:42] = eye + [0.33, 0.40]
    pts[42:48] = eye + [0.67, 0.40]
    pts[48:60] = _ellipse(0.5, 0.74, 0.14, 0.06, math.pi, 3 * math.pi, 13)[:12]
    pts[60:68] = _ellipse(0.5, 0.74, 0.09, 0.025, math.pi, 3 * math.pi, 9)[:8]
    if scheme_name == "ibug68":
        return pts
    if scheme_name == "aflw19":
        idx = [17, 19, 21, 22, 24, 26, 36, 37, 39, 42, 43, 45, 31, 30, 35, 48, 51, 54, 8]
        out = pts[idx].copy()
        out[7] = pts[36:42].mean(axis=0)
        out[10] = pts[42:48].mean(axis=0)
        return out
    raise ValueError(scheme_name)


def stage_seed(scheme_name: str, stage: int) -> int:
    """The weight seed of ``stage`` (0-based) of the test model of ``scheme_name``."""
    return 100 * stage + len(scheme_name)


def stage_weights(scheme_name: str, seed: int) -> dict[str, np.ndarray]:
    """Deterministic weights of one stage (conv_w [C,3,3,3], conv_b [C], fc_w [2K,C], fc_b [2K])."""
    rng = np.random.default_rng(seed)
    k = get_scheme(scheme_name).num_points
    return {
        "conv_w": rng.normal(0.0, 0.3, (CHANNELS, 3, 3, 3)).astype(np.float32),
        "conv_b": rng.normal(0.0, 0.05, (CHANNELS,)).astype(np.float32),
        "fc_w": rng.normal(0.0, 0.005, (2 * k, CHANNELS)).astype(np.float32),
        "fc_b": mean_face(scheme_name).reshape(-1).astype(np.float32),
    }


def write_stage_onnx(path: Path, scheme_name: str, size: int, seed: int) -> Path:
    """Write one stage [N, 3, size, size] -> [N, 2K] to ``path``."""
    w = stage_weights(scheme_name, seed)
    k2 = w["fc_b"].shape[0]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["landmarks"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        f"wingmark-test-{scheme_name}-{size}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["batch", k2])],
        initializer=[numpy_helper.from_array(v, name=n) for n, v in w.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="wingmark-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _write_torchscript(path: Path, scheme_name: str, size: int, seed: int) -> bool:
    """The same stage as a TorchScript archive for the torch backend; False where torch is missing."""
    try:
        import torch
    except ImportError:
        return False
    w = stage_weights(scheme_name, seed)
    conv = torch.nn.Conv2d(3, CHANNELS, 3, stride=2)
    fc = torch.nn.Linear(CHANNELS, w["fc_b"].shape[0])
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w["conv_w"]))
        conv.bias.copy_(torch.from_numpy(w["conv_b"]))  # type: ignore[union-attr]
        fc.weight.copy_(torch.from_numpy(w["fc_w"]))
        fc.bias.copy_(torch.from_numpy(w["fc_b"]))
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc)
    scripted = torch.jit.trace(net.eval(), torch.zeros(1, 3, size, size))
    torch.jit.save(scripted, str(path))
    return True


def publish_test_model(
    root: Path,
    scheme_name: str = "ibug68",
    *,
    name: str | None = None,
    version: str = "1",
    sizes: tuple[int, ...] = (64, 128),
    calibrations: dict[str, BoxCalibrationSpec] | None = None,
    with_torch: bool = False,
) -> ModelVersion:
    """Publish a real two-stage (by default) test model into the store at ``root``."""
    name = name or f"test-{scheme_name}"
    stages: list[StageSpec] = []
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, size in enumerate(sizes):
            onnx_name = f"stage{i + 1}.onnx"
            src = write_stage_onnx(Path(tmp) / onnx_name, scheme_name, size, seed=stage_seed(scheme_name, i))
            files[onnx_name] = src
            checkpoint = None
            if with_torch and _write_torchscript(
                Path(tmp) / f"stage{i + 1}.pt", scheme_name, size, stage_seed(scheme_name, i)
            ):
                checkpoint = f"stage{i + 1}.pt"
                files[checkpoint] = Path(tmp) / checkpoint
            stages.append(
                StageSpec(
                    name=f"stage{i + 1}",
                    architecture="test-conv-gap-fc",
                    input_size=size,
                    file=onnx_name,
                    sha256=sha256_file(src),
                    checkpoint=checkpoint,
                )
            )
        cal = {"client": BoxCalibrationSpec()}
        cal.update(calibrations or {})
        manifest = Manifest(
            name=name,
            version=version,
            scheme=scheme_name,
            stages=stages,
            box_calibrations=cal,
            description="tiny deterministic test model (tests/service/modelgen.py)",
        )
        return ModelStore(root).publish(manifest, files)
