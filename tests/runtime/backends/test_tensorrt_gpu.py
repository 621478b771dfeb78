"""TensorRT engine build, cache, execution and the TensorRT service backend (CUDA hosts only).

Every test here is marked ``gpu`` and skipped, with the reason, where TensorRT, cuda-python or a
CUDA device is missing (``scripts/gpu_check.sh`` runs them on a GPU host).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import tensorrt as te
from train.export.onnx import export_onnx
from train.export.parity import compare_outputs, onnx_runtime_session, run_onnx

_OK, _REASON = te.cuda_available()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _OK, reason=f"needs TensorRT + cuda-python + a CUDA device: {_REASON}"),
]


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from tests.train.export.test_onnx import TinyStage, randomise_bn

    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_onnx(randomise_bn(TinyStage()), path, 16)
    return path


def key_for(
    path: Path, precision: str, profile: te.BatchProfile, calibration: str | None = None
) -> te.EngineKey:
    return te.engine_key(
        path,
        16,
        compute_capability=te.device_compute_capability(0),
        tensorrt_version=te.tensorrt_version(),
        precision=precision,
        profile=profile,
        calibration=calibration,
    )


def inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("fp16", 2e-2)])
def test_engine_matches_onnxruntime(tiny_onnx, precision, tolerance):
    profile = te.BatchProfile(1, 4, 16)
    engine = te.build_serialized_engine(tiny_onnx, profile, precision, log=lambda _m: None)
    runner = te.EngineRunner(engine, max_batch_size=16)
    session = onnx_runtime_session(tiny_onnx)
    try:
        for n in (1, 5, 16):  # min, odd, max of the profile
            x = inputs(n, seed=n)
            compare_outputs(run_onnx(session, x), runner.run(x), tolerance)
        with pytest.raises(ValueError):
            runner.run(inputs(17))
        with pytest.raises(ValueError):
            te.EngineRunner(engine, max_batch_size=32)
    finally:
        runner.close()


def test_int8_engine_with_calibration_cache(tiny_onnx, tmp_path):
    profile = te.BatchProfile(1, 8, 16)
    calib = tmp_path / "tiny.calib"
    batches = [inputs(8, seed=s) for s in range(8)]
    engine = te.build_serialized_engine(
        tiny_onnx, profile, "int8", calibration_batches=batches, calibration_cache=calib, log=lambda _m: None
    )
    assert calib.is_file() and calib.stat().st_size > 0
    runner = te.EngineRunner(engine, 16)
    try:
        x = inputs(16, seed=99)
        ref = run_onnx(onnx_runtime_session(tiny_onnx), x)
        got = runner.run(x)
        # INT8 is approximate: errors well below the output's spread
        assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max() + 1e-3
    finally:
        runner.close()
    # a second build reuses the calibration cache (no batches needed)
    again = te.build_serialized_engine(
        tiny_onnx, profile, "int8", calibration_cache=calib, log=lambda _m: None
    )
    assert len(again) > 0


def test_cache_builds_once_and_rebuilds_stale(tiny_onnx, tmp_path):
    cache = te.EngineCache(tmp_path / "engines", log=lambda _m: None)
    profile = te.BatchProfile(1, 2, 8)
    key = key_for(tiny_onnx, "fp16", profile)
    calls = []

    def build() -> bytes:
        calls.append(1)
        return te.build_serialized_engine(tiny_onnx, profile, "fp16", log=lambda _m: None)

    path, built = cache.get_or_build("tiny", "1", 0, key, build)
    assert built and te.check_cached_engine(path, key).usable
    _, built_again = cache.get_or_build("tiny", "1", 0, key, build)
    assert not built_again and len(calls) == 1
    runner = te.EngineRunner(path, 8)
    try:
        assert runner.run(inputs(3)).shape == (3, 10)
    finally:
        runner.close()
    stale = replace(key, tensorrt_version="0.0.0")
    assert not te.check_cached_engine(path, stale).usable


def test_benchmark_runner_reports_each_batch_size(tiny_onnx):
    engine = te.build_serialized_engine(tiny_onnx, te.BatchProfile(1, 4, 8), "fp16", log=lambda _m: None)
    runner = te.EngineRunner(engine, 8)
    try:
        rows = te.benchmark_runner(runner.run, (3, 16, 16), [1, 8], seconds=0.2, warmup=2)
    finally:
        runner.close()
    assert [r["batch_size"] for r in rows] == [1.0, 8.0]
    assert all(r["faces_per_s"] > 0 and r["iterations"] >= 3 for r in rows)


def test_tensorrt_backend_matches_onnxruntime_backend(tmp_path, monkeypatch):
    from runtime.backends import create_backend
    from tests.service.modelgen import publish_test_model

    monkeypatch.setenv(te.CACHE_ENV, str(tmp_path / "engines"))
    model = publish_test_model(tmp_path / "store", "ibug68")
    ort_backend = create_backend("onnxruntime", model, device="cpu", max_batch_size=8)
    trt_backend = create_backend("tensorrt", model, device="cuda:0", max_batch_size=8)
    try:
        trt_backend.warmup(8)
        for stage, spec in enumerate(model.manifest.stages):
            x = np.random.default_rng(stage).normal(size=(11, 3, spec.input_size, spec.input_size))
            x = x.astype(np.float32)  # 11 > max batch: the backend splits it
            compare_outputs(ort_backend.run(stage, x), trt_backend.run(stage, x), 2e-2)
        assert all(p.is_file() for p in trt_backend.engine_paths)  # type: ignore[attr-defined]
    finally:
        trt_backend.close()
        ort_backend.close()
