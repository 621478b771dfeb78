"""Converting face-api's tfjs detectors to ONNX: weight manifests, TF 'SAME' padding, reproducibility,
and the converted nets against face-api's own tfjs network (Node)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.service.photos import unavailable
from train.export.detectors import (
    CONVERTERS,
    _same_pads,
    build_one,
    default_out,
    read_tfjs_tensors,
    read_tfjs_weights,
    sha256_file,
    verify_tfjs,
)


def test_read_tfjs_weights_dequantises_like_tfjs(tmp_path: Path) -> None:
    q = np.array([[0, 1], [2, 255]], np.uint8)
    f = np.array([1.5, -2.0, 3.25], np.float32)
    i = np.array([7], np.int32)
    (tmp_path / "w.bin").write_bytes(q.tobytes() + f.tobytes() + i.tobytes())
    manifest = [
        {
            "paths": ["w.bin"],
            "weights": [
                {"name": "a", "shape": [2, 2], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
                {"name": "b", "shape": [3], "dtype": "float32"},
                {"name": "c", "shape": [], "dtype": "int32"},
            ],
        }
    ]  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    w = read_tfjs_weights(tmp_path / "m.json")
    assert np.allclose(w["a"], [[-1.0, -0.5], [0.0, 126.5]]) and w["a"].dtype == np.float32
    assert np.array_equal(w["b"], f) and w["c"].shape == () and int(w["c"]) == 7
    t = read_tfjs_tensors(tmp_path / "m.json")
    assert t["a"].quantised and t["a"].q.dtype == np.uint8 and not t["b"].quantised
    (tmp_path / "w.bin").write_bytes(q.tobytes() + f.tobytes() + i.tobytes() + b"\0")
    with pytest.raises(ValueError, match="read 20 bytes of 21"):
        read_tfjs_weights(tmp_path / "m.json")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [(512, 3, 2, (0, 1)), (512, 3, 1, (1, 1)), (2, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (8, 1, 1, (0, 0))],
)
def test_same_pads_follow_tensorflow(size: int, kernel: int, stride: int, pads: tuple[int, int]) -> None:
    assert _same_pads(size, kernel, stride) == pads


def _package() -> Path:
    from train.export.detectors import FACE_API, default_cache, fetch_npm

    if shutil.which("npm") is None and not (default_cache() / "vladmandic-face-api-1.7.15").is_dir():
        unavailable("npm is not installed: cannot fetch @vladmandic/face-api")
    try:
        return fetch_npm(*FACE_API, default_cache())
    except Exception as exc:
        unavailable(f"npm pack failed: {exc}")


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_conversion_reproduces_the_committed_file(name: str, tmp_path: Path) -> None:
    """face-api's nets are rebuilt byte for byte; tflite2onnx names nodes differently from run to run,
    so BlazeFace is compared by its outputs."""
    import onnxruntime as ort

    from train.export.detectors import default_cache

    conv = CONVERTERS[name]
    if conv.registry == "npm":
        _package()
    elif shutil.which("pip") is None and not list(default_cache().glob("mediapipe-*.whl")):
        unavailable("cannot fetch the mediapipe wheel")
    record = build_one(conv, default_cache(), tmp_path, verify=False)
    committed = json.loads((default_out() / name / "source.json").read_text())
    assert committed["onnx_sha256"] == sha256_file(default_out() / name / f"{name}.onnx")
    assert record["file_sha256"] == committed["file_sha256"]
    assert committed["licence"] == conv.licence and committed["version"] == conv.package[1]
    if conv.registry == "npm":
        assert record["onnx_sha256"] == committed["onnx_sha256"]
        assert max(committed["verified"]["max_abs_diff"].values()) < committed["verified"]["tolerance"]
        return
    assert committed["verified"]["matched"] >= 0.9 * committed["verified"]["faces"]
    x = np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    outs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})
        for p in (tmp_path / name / f"{name}.onnx", default_out() / name / f"{name}.onnx")
    ]
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_tiny_face_detector_matches_face_api_in_node(tmp_path: Path) -> None:
    """The independent reference: face-api's own network in tfjs (cpu backend) on its demo photos."""
    if shutil.which("node") is None:
        unavailable("node is not installed: cannot run face-api's tfjs network")
    root = _package()
    conv = CONVERTERS["tiny_face_detector"]
    result = verify_tfjs(conv, root, default_out() / conv.name / f"{conv.name}.onnx", tmp_path)
    assert len(result["images"]) == 6
    assert max(result["max_abs_diff"].values()) < 1e-3
