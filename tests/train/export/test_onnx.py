"""ONNX export: batch-norm folding, dynamic batch, checker, onnxslim, PyTorch parity, fp16 weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from train.export.onnx import (
    BATCH_DIM,
    check_parity,
    compress_weights_fp16,
    count_ops,
    export_onnx,
    fold_batchnorm,
)
from train.export.parity import ParityError, compare_outputs, onnx_runtime_session, run_onnx
from train.export.quantize import decompress_weights_fp16
from train.models import create_model


class TinyStage(nn.Module):
    """Conv/BN/ReLU/pool trunk and a Linear/BN1d/Linear head: [N, 3, 16, 16] -> [N, 2K]."""

    def __init__(self, num_points: int = 5) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 2 * num_points),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters (so folding matters)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_fold_batchnorm_removes_bn_and_keeps_outputs():
    model = randomise_bn(TinyStage())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()), "original changed"
    x = torch.from_numpy(batch(4, 16))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_leaves_shared_conv_output_alone():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y  # conv output used twice: folding would be wrong

    model = randomise_bn(Branchy())
    folded = fold_batchnorm(model)
    x = torch.from_numpy(batch(2, 4))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_export_graph_is_checked_dynamic_and_bn_free(tmp_path):
    model = randomise_bn(TinyStage())
    graph = export_onnx(model, tmp_path / "s.onnx", 16, metadata={"wingmark.stage": "1"})
    onnx.checker.check_model(onnx.load(str(tmp_path / "s.onnx")), full_check=True)
    ops = count_ops(graph)
    assert "BatchNormalization" not in ops and ops["Conv"] == 2
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    assert {p.key: p.value for p in graph.metadata_props} == {"wingmark.stage": "1"}
    session = onnx_runtime_session(tmp_path / "s.onnx")
    for n in (1, 3, 17):  # any batch size runs
        assert run_onnx(session, batch(n, 16)).shape == (n, 10)
    assert not list(tmp_path.glob("*.raw.onnx")), "temporary export file left behind"


def test_parity_passes_and_fails_on_a_different_model(tmp_path):
    model = randomise_bn(TinyStage())
    path = tmp_path / "s.onnx"
    export_onnx(model, path, 16)
    report = check_parity(model, path, batch(8, 16), tolerance=1e-4)
    assert report.passed and report.max_abs_error < 1e-4 and report.batch_size == 8
    other = randomise_bn(TinyStage(), seed=1)
    with pytest.raises(ParityError, match="max abs error"):
        check_parity(other, path, batch(8, 16), tolerance=1e-4)


def test_compare_outputs_reports_shape_mismatch_and_nan():
    a = np.zeros((2, 4), np.float32)
    with pytest.raises(ParityError, match="shape"):
        compare_outputs(a, np.zeros((2, 6), np.float32), 1e-3)
    b = a.copy()
    b[0, 0] = np.nan
    with pytest.raises(ParityError):
        compare_outputs(a, b, 1e-3)
    assert compare_outputs(a, a + 1e-4, 1e-3).max_abs_error == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize(("arch", "points"), [("cnn6", 68), ("cnn7", 19)])
def test_registry_cnn_stages_export_with_parity(tmp_path, arch, points):
    model = randomise_bn(create_model(arch, points))
    size = {"cnn6": 64, "cnn7": 128}[arch]
    path = tmp_path / f"{arch}.onnx"
    graph = export_onnx(model, path, size)
    assert "BatchNormalization" not in count_ops(graph)
    report = check_parity(model, path, batch(4, size), tolerance=1e-4)
    assert report.passed


def test_fp16_weight_storage_halves_size_and_round_trips(tmp_path):
    model = randomise_bn(create_model("cnn6", 19))
    full, half = tmp_path / "full.onnx", tmp_path / "half.onnx"
    export_onnx(model, full, 64)
    export_onnx(model, half, 64, fp16_weights=True)
    ratio = half.stat().st_size / full.stat().st_size
    assert 0.45 < ratio < 0.55
    assert count_ops(onnx.load(str(half))).get("Cast", 0) >= 7
    x = batch(4, 64)
    report = check_parity(model, half, x, tolerance=2e-3)
    assert report.max_abs_error > 0  # weights really were rounded
    restored = decompress_weights_fp16(onnx.load(str(half)))
    assert "Cast" not in count_ops(restored)
    onnx.save(restored, str(tmp_path / "restored.onnx"))
    np.testing.assert_allclose(
        run_onnx(onnx_runtime_session(tmp_path / "restored.onnx"), x),
        run_onnx(onnx_runtime_session(half), x),
        atol=1e-6,
    )


def test_compress_weights_rejects_overflow():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((64, 32), 1e6, np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 32])],
        [w],
    )
    with pytest.raises(Exception, match="overflows"):
        compress_weights_fp16(helper.make_model(graph))
