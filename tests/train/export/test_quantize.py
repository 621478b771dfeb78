"""ONNX Runtime INT8 quantisation of one stage graph (static QDQ with calibration, dynamic)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from train.export.onnx import count_ops, export_onnx
from train.export.parity import onnx_runtime_session, run_onnx
from train.export.quantize import CropCalibrationReader, measure_speed, quantize_stage
from train.models import create_model


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("cnn6", 19).eval()
    path = tmp_path_factory.mktemp("q") / "stage.onnx"
    export_onnx(model, path, 64, fp16_weights=True)
    return path


def smooth_inputs(n: int, seed: int) -> np.ndarray:
    """Image-like normalised inputs (smooth blobs, not white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    out = np.empty((n, 3, 64, 64), np.float32)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        for c in range(3):
            out[i, c] = (blob * rng.uniform(0.5, 1.0) - 0.5 + 0.05 * rng.normal(size=(64, 64))).astype(
                np.float32
            )
    return out


def test_calibration_reader_batches_and_rewinds():
    x = np.zeros((70, 3, 4, 4), np.float32)
    reader = CropCalibrationReader(x, "input", batch_size=32)
    sizes = []
    while (b := reader.get_next()) is not None:
        sizes.append(len(b["input"]))
    assert sizes == [32, 32, 6]
    reader.rewind()
    first = reader.get_next()
    assert first is not None and first["input"].shape == (32, 3, 4, 4)


def test_static_qdq_quantisation_is_close_and_smaller(stage, tmp_path):
    dst = tmp_path / "int8.onnx"
    quantize_stage(stage, dst, "static", smooth_inputs(64, seed=1))
    ops = count_ops(onnx.load(str(dst)))
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert dst.stat().st_size < 0.7 * stage.stat().st_size  # fp16-stored weights -> int8
    x = smooth_inputs(16, seed=2)
    ref = run_onnx(onnx_runtime_session(stage), x)
    got = run_onnx(onnx_runtime_session(dst), x)
    assert got.shape == ref.shape
    # crop units: 2e-3 is 0.13 px of a 64-px crop
    assert np.abs(got - ref).mean() < 2e-3 and np.abs(got - ref).max() < 1e-2
    assert not np.allclose(got, ref), "the graph should actually be quantised"


def test_dynamic_quantisation_runs_without_calibration(stage, tmp_path):
    dst = tmp_path / "dyn.onnx"
    quantize_stage(stage, dst, "dynamic")
    x = smooth_inputs(4, seed=3)
    assert run_onnx(onnx_runtime_session(dst), x).shape == (4, 38)


def test_static_needs_calibration_and_mode_is_checked(stage, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_stage(stage, tmp_path / "a.onnx", "static", None)
    with pytest.raises(ValueError, match="mode"):
        quantize_stage(stage, tmp_path / "b.onnx", "int4", smooth_inputs(2, 0))


def test_measure_speed_returns_positive_seconds(stage):
    a, b = measure_speed([stage, stage], 64, batch_sizes=(1, 4), repeats=3)
    assert set(a) == set(b) == {1, 4} and all(v > 0 for v in (*a.values(), *b.values()))


def test_quantize_main_publishes_an_int8_version_with_its_costs(tmp_path, capsys):
    import json

    from model_store.store import ModelStore
    from tests.service.modelgen import publish_test_model
    from train.export.cli import quantize_main

    src = publish_test_model(tmp_path / "src", "aflw19", name="tiny-aflw19", version="1.0.0")
    report_path = tmp_path / "q.json"
    args = ["tiny-aflw19", "--store", str(tmp_path / "src"), "--out-store", str(tmp_path / "out")]
    args += [
        "--calibration-samples",
        "8",
        "--eval-samples",
        "6",
        "--repeats",
        "2",
        "--batch-sizes",
        "1,4",
        "--json",
        str(report_path),
    ]
    assert quantize_main(args) == 0
    assert '"nme_change"' in capsys.readouterr().out
    out = ModelStore(tmp_path / "out")
    q = out.resolve("tiny-aflw19-int8", "1.0.0")
    out.verify(q)
    assert [s.input_size for s in q.manifest.stages] == [s.input_size for s in src.manifest.stages]
    assert q.manifest.scheme == "aflw19" and q.manifest.box_calibrations == src.manifest.box_calibrations
    report = json.loads(report_path.read_text())
    assert report["n"] == 6 and report["calibration"]["n"] == 8
    assert report["nme_change"] == pytest.approx(report["nme_int8"] - report["nme_float"])
    assert abs(report["nme_change"]) < 0.05
    assert set(report["speed"]["cascade_speedup"]) == {"1", "4"}
    assert q.manifest.evaluation["quantization"]["mode"] == "static"
