"""ONNX Runtime INT8 quantisation of one stage graph (static QDQ with calibration, dynamic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from train.export.onnx import count_ops, export_onnx
from train.export.parity import onnx_runtime_session, run_onnx
from train.export.quantize import (
    CropCalibrationReader,
    measure_speed,
    quantize_stage,
    refusal_reason,
    relative_change,
)
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


REAL_FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "real"


def _quantize_args(tmp_path: Path, *extra: str) -> list[str]:
    args = ["tiny-aflw19@1.0.0", "--store", str(tmp_path / "src"), "--out-store", str(tmp_path / "out")]
    args += ["--calibration-samples", "8", "--eval-samples", "6", "--repeats", "2", "--batch-sizes", "1,4"]
    args += ["--real-root", str(REAL_FIXTURE), "--real-calibration-samples", "2"]
    return [*args, *extra]


def test_quantize_main_publishes_an_int8_version_with_its_costs(tmp_path, capsys):
    from model_store.store import ModelStore
    from tests.service.modelgen import publish_test_model
    from train.export.cli import quantize_main

    src = publish_test_model(tmp_path / "src", "aflw19", name="tiny-aflw19", version="1.0.0")
    report_path = tmp_path / "q.json"
    args = _quantize_args(tmp_path, "--max-relative-loss", "10", "--json", str(report_path))
    assert quantize_main(args) == 0
    assert '"worst_relative_change"' in capsys.readouterr().out
    out = ModelStore(tmp_path / "out")
    q = out.resolve("tiny-aflw19-int8", "1.0.0")
    out.verify(q)
    assert [s.input_size for s in q.manifest.stages] == [s.input_size for s in src.manifest.stages]
    assert q.manifest.scheme == "aflw19" and q.manifest.box_calibrations == src.manifest.box_calibrations
    report = json.loads(report_path.read_text())
    assert report["n"] == 6 and report["calibration"]["synthetic"]["n"] == 8
    assert report["calibration"]["real"]["n"] == 2  # the fixture's train split
    # float and int8 on the validation set and the real held-out faces (the fixture's test split)
    assert set(report["sets"]) == {"val", "real_test"} and report["sets"]["real_test"]["n"] == 2
    for entry in report["sets"].values():
        assert entry["nme_change"] == pytest.approx(entry["nme_int8"] - entry["nme_float"])
        assert entry["relative_change"] == pytest.approx(entry["nme_change"] / entry["nme_float"])
    assert report["worst_relative_change"] == max(e["relative_change"] for e in report["sets"].values())
    assert report["nme_change"] == pytest.approx(report["nme_int8"] - report["nme_float"])
    assert abs(report["nme_change"]) < 0.05
    assert set(report["speed"]["cascade_speedup"]) == {"1", "4"}
    assert q.manifest.evaluation["quantization"]["mode"] == "static"
    assert q.manifest.evaluation["sets"]["real_test"]["n"] == 2
    # CNN-6/7 has no depthwise convolution: auto keeps ONNX Runtime's S8S8, and the report says so
    assert [(g["activations"], g["depthwise_convs"]) for g in report["graphs"]] == [("int8", 0)] * 2
    assert "S8S8" in report["format"] and "U8S8" not in report["format"]


def test_quantize_refuses_to_publish_past_the_accuracy_limit(tmp_path, capsys):
    from model_store.store import ModelStore
    from tests.service.modelgen import publish_test_model
    from train.export.cli import quantize_main

    publish_test_model(tmp_path / "src", "aflw19", name="tiny-aflw19", version="1.0.0")
    # a limit no quantisation meets (int8 would have to be 100 % better than float)
    assert quantize_main(_quantize_args(tmp_path, "--max-relative-loss", "-1")) == 1
    assert '"refused"' in capsys.readouterr().out
    assert "tiny-aflw19-int8" not in ModelStore(tmp_path / "out").list_models()


def test_publish_puts_the_variant_beside_the_float_model(tmp_path):
    from model_store.store import ModelStore
    from tests.service.modelgen import publish_test_model
    from train.export.cli import quantize_main

    publish_test_model(tmp_path / "src", "aflw19", name="tiny-aflw19", version="1.0.0")
    args = _quantize_args(tmp_path, "--publish", "--max-relative-loss", "10", "--activations", "uint8")
    assert quantize_main(args) == 0
    assert ModelStore(tmp_path / "src").list_versions("tiny-aflw19-int8") == ["1.0.0"]
    assert not (tmp_path / "out").exists()
    quant = (
        ModelStore(tmp_path / "src").resolve("tiny-aflw19-int8", "1.0.0").manifest.evaluation["quantization"]
    )
    assert [g["activations"] for g in quant["graphs"]] == ["uint8", "uint8"] and "U8S8" in quant["format"]


def test_relative_change():
    assert relative_change(0.05, 0.0515) == pytest.approx(0.03)
    assert relative_change(0.05, 0.049) == pytest.approx(-0.02)


def test_a_refusal_on_a_cpu_without_an_int8_unit_says_why_it_measured_badly():
    with_unit = refusal_reason(0.25, 0.03, ["avx512_vnni"])
    assert with_unit == "int8 NME is +25.0% relative to float on one set; the limit is 3%"
    without = refusal_reason(0.25, 0.03, [])
    assert without.startswith(with_unit) and "saturate" in without and "no int8 dot-product unit" in without
