"""Engine-cache key and staleness logic of runtime.backends.tensorrt (pure Python, no TensorRT needed)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from runtime.backends import tensorrt as te

ONNX_SHA = hashlib.sha256(b"onnx-v1").hexdigest()


def make_key(**overrides) -> te.EngineKey:
    fields: dict[str, Any] = {
        "onnx_sha256": ONNX_SHA,
        "compute_capability": "8.6",
        "tensorrt_version": "10.3.0",
        "precision": "fp16",
        "profile": te.BatchProfile(1, 16, 64),
        "input_shape": (3, 64, 64),
    }
    fields.update(overrides)
    return te.EngineKey(**fields)


def test_module_imports_without_torch_or_tensorrt():
    # The GPU service imports this module; it must not pull torch (or need TensorRT) at import.
    import subprocess

    code = (
        "import sys; import runtime.backends.tensorrt, runtime.backends.tensorrt_build; "
        "print('torch' in sys.modules, 'tensorrt' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_batch_profile_validation_and_default_opt():
    assert te.BatchProfile.for_max(64) == te.BatchProfile(1, 16, 64)
    assert te.BatchProfile.for_max(2) == te.BatchProfile(1, 1, 2)
    assert te.BatchProfile.for_max(32, opt=8) == te.BatchProfile(1, 8, 32)
    for bad in [(0, 1, 4), (1, 8, 4), (2, 1, 4)]:
        with pytest.raises(ValueError):
            te.BatchProfile(*bad)


def test_key_validation():
    with pytest.raises(ValueError, match="precision"):
        make_key(precision="bf16")
    with pytest.raises(ValueError, match="calibration"):
        make_key(precision="int8")
    with pytest.raises(ValueError, match="hex"):
        make_key(onnx_sha256="abc")
    assert make_key(precision="int8", calibration="synthetic:n=8").calibration == "synthetic:n=8"


def test_key_round_trips_through_json():
    key = make_key(precision="int8", calibration="synthetic-val:n=512")
    assert te.EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key


def test_engine_path_separates_gpu_trt_precision_and_profile(tmp_path):
    base = te.engine_path_for(tmp_path, "cnn67-ibug68", "1.0.0", 0, make_key())
    assert base == tmp_path / "cnn67-ibug68" / "1.0.0" / "stage0_fp16_sm86_trt10.3.0_b1-16-64.engine"
    variants = [
        make_key(compute_capability="9.0"),
        make_key(tensorrt_version="10.4.0"),
        make_key(precision="fp32"),
        make_key(profile=te.BatchProfile(1, 8, 64)),
    ]
    paths = {te.engine_path_for(tmp_path, "cnn67-ibug68", "1.0.0", 0, k) for k in variants}
    assert base not in paths and len(paths) == len(variants)
    # a new ONNX file under the same version maps to the same slot (and is then detected as stale)
    assert te.engine_path_for(tmp_path, "cnn67-ibug68", "1.0.0", 0, make_key(onnx_sha256="0" * 64)) == base
    assert te.engine_path_for(tmp_path, "m", "1", 1, make_key()).name.startswith("stage1_")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x\x00"])
def test_engine_path_rejects_unsafe_names(tmp_path, bad):
    with pytest.raises(ValueError):
        te.engine_path_for(tmp_path, bad, "1.0.0", 0, make_key())
    with pytest.raises(ValueError):
        te.engine_path_for(tmp_path, "m", bad, 0, make_key())


def test_cache_hit_after_write(tmp_path):
    key = make_key()
    path = te.engine_path_for(tmp_path, "m", "1.0.0", 0, key)
    assert te.check_cached_engine(path, key) == te.CacheCheck(False, "no cached engine")
    te.write_cache_entry(path, b"engine-bytes", key, {"note": "x"})
    assert te.check_cached_engine(path, key).usable
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["key"]["onnx_sha256"] == ONNX_SHA
    assert sidecar["engine_sha256"] == hashlib.sha256(b"engine-bytes").hexdigest()
    assert sidecar["info"] == {"note": "x"}
    assert not list(path.parent.glob(".*tmp")), "temporary files left behind"


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"onnx_sha256": hashlib.sha256(b"onnx-v2").hexdigest()}, "stale"),
        ({"tensorrt_version": "10.4.1"}, "tensorrt_version"),
        ({"compute_capability": "9.0"}, "compute_capability"),
        ({"precision": "fp32"}, "precision"),
        ({"profile": te.BatchProfile(1, 16, 128)}, "profile"),
        ({"input_shape": (3, 128, 128)}, "input_shape"),
    ],
)
def test_mismatched_key_is_rejected_with_reason(tmp_path, change, word):
    cached = make_key()
    path = tmp_path / "e.engine"
    te.write_cache_entry(path, b"engine", cached)
    check = te.check_cached_engine(path, replace(cached, **change))
    assert not check.usable
    assert word in check.reason


def test_corrupt_or_incomplete_entries_are_rejected(tmp_path):
    key = make_key()
    path = tmp_path / "e.engine"
    sidecar = path.with_name(path.name + ".json")
    te.write_cache_entry(path, b"engine", key)
    path.write_bytes(b"engine-truncated")
    assert "checksum" in te.check_cached_engine(path, key).reason

    te.write_cache_entry(path, b"engine", key)
    sidecar.unlink()
    assert "sidecar" in te.check_cached_engine(path, key).reason

    te.write_cache_entry(path, b"engine", key)
    sidecar.write_text("{not json")
    assert "unreadable" in te.check_cached_engine(path, key).reason

    te.write_cache_entry(path, b"engine", key)
    data = json.loads(sidecar.read_text())
    data["format"] = 99
    sidecar.write_text(json.dumps(data))
    assert "format" in te.check_cached_engine(path, key).reason


def test_get_or_build_builds_once_then_hits_then_rebuilds_when_stale(tmp_path):
    cache = te.EngineCache(tmp_path, log=lambda _m: None)
    builds: list[str] = []

    def builder(tag: str):
        def build() -> bytes:
            builds.append(tag)
            return f"engine-{tag}".encode()

        return build

    key = make_key()
    path, built = cache.get_or_build("m", "1.0.0", 0, key, builder("a"))
    assert built and builds == ["a"] and path.read_bytes() == b"engine-a"
    path2, built2 = cache.get_or_build("m", "1.0.0", 0, key, builder("b"))
    assert (path2, built2) == (path, False) and builds == ["a"]
    # the ONNX file was republished: same slot, stale entry replaced, never loaded
    new_key = make_key(onnx_sha256=hashlib.sha256(b"onnx-v2").hexdigest())
    path3, built3 = cache.get_or_build("m", "1.0.0", 0, new_key, builder("c"))
    assert built3 and path3 == path and path.read_bytes() == b"engine-c"
    assert te.check_cached_engine(path, new_key).usable and not te.check_cached_engine(path, key).usable


def test_failed_build_leaves_no_usable_entry(tmp_path):
    cache = te.EngineCache(tmp_path, log=lambda _m: None)
    key = make_key()

    def fail() -> bytes:
        raise RuntimeError("builder failed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("m", "1.0.0", 0, key, fail)
    assert not te.check_cached_engine(te.engine_path_for(tmp_path, "m", "1.0.0", 0, key), key).usable


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv(te.CACHE_ENV, str(tmp_path / "engines"))
    assert te.default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv(te.CACHE_ENV)
    assert te.default_cache_dir() == Path.home() / ".cache" / "wingmark" / "engines"


def test_engine_key_is_made_in_one_place(tmp_path):
    """The backend, ``wingmark build-engine`` and ``wingmark engines`` all key engines by engine_key."""
    onnx = tmp_path / "stage.onnx"
    onnx.write_bytes(b"onnx-v1")
    profile = te.BatchProfile(1, 16, 64)

    def key(size: int, precision: str, calibration: str | None = None) -> te.EngineKey:
        return te.engine_key(
            onnx,
            size,
            compute_capability="8.6",
            tensorrt_version="10.3.0",
            precision=precision,
            profile=profile,
            calibration=calibration,
        )

    assert key(64, "fp16", "ignored") == make_key()  # the file's sha256, (3, S, S), no fp16 calibration
    assert key(64, "int8").calibration == te.DEFAULT_INT8_CALIBRATION
    assert key(128, "int8", "real:n=64") == make_key(
        precision="int8", calibration="real:n=64", input_shape=(3, 128, 128)
    )
    root = Path(__file__).resolve().parents[3]
    for module in ("runtime/backends/tensorrt.py", "train/export/cli.py"):
        source = (root / module).read_text()
        assert "engine_key(" in source and "EngineKey(" not in source, module


def test_cuda_available_reports_a_reason_here():
    ok, reason = te.cuda_available()
    assert isinstance(ok, bool) and reason
