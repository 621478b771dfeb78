"""One contract for every inference backend the machine has (CONTRACT.md: runtime/backends; the torch
reference backend lives in train/backends and registers itself on import).

Each backend runs the real two-stage test model and must match an independent numpy evaluation of
the same weights, give the same rows whatever the batch size, and keep shapes and dtype.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_store.store import ModelStore, ModelVersion
from runtime.backends import Backend, BackendUnavailableError, create_backend
from tests.service.modelgen import stage_weights


def _cuda_reason() -> str | None:
    """Why the TensorRT case cannot run here, or None. Asks TensorRT and cuda-python themselves (as the
    backend does), not torch: the GPU image has TensorRT but no torch."""
    from runtime.backends.tensorrt import cuda_available

    ok, reason = cuda_available()
    return None if ok else f"needs TensorRT + cuda-python + a CUDA device: {reason}"


BACKENDS = [
    pytest.param(("onnxruntime", "cpu"), id="onnxruntime"),
    pytest.param(
        ("torch", "cpu"),
        id="torch",
        marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
    ),
    pytest.param(
        ("tensorrt", "cuda:0"),
        id="tensorrt",
        marks=[pytest.mark.gpu, pytest.mark.skipif(_cuda_reason() is not None, reason=_cuda_reason() or "")],
    ),
]
TOLERANCE = {"onnxruntime": 1e-5, "torch": 1e-5, "tensorrt": 3e-3}  # tensorrt runs fp16 by default


def reference(x: np.ndarray, scheme: str, seed: int) -> np.ndarray:
    """numpy conv(3x3, stride 2) -> ReLU -> global average -> fully connected: [N, 3, S, S] -> [N, 2K]."""
    w = stage_weights(scheme, seed)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[
        :, :, ::2, ::2
    ]  # [N, 3, H', W', 3, 3]
    conv = np.einsum("nchwij,ocij->nohw", win, w["conv_w"]) + w["conv_b"][None, :, None, None]
    pooled = np.maximum(conv, 0).mean(axis=(2, 3))  # [N, C]
    return np.asarray(pooled @ w["fc_w"].T + w["fc_b"], dtype=np.float32)


@pytest.fixture(scope="module", params=["ibug68", "aflw19"])
def model(request: pytest.FixtureRequest, test_store: Path) -> ModelVersion:
    return ModelStore(test_store).resolve(f"test-{request.param}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, model: ModelVersion) -> Iterator[Backend]:
    kind, device = request.param
    if kind == "torch":
        import train.backends  # noqa: F401  (registers the torch reference backend)
    try:
        b = create_backend(kind, model, device=device, max_batch_size=8)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    yield b
    b.close()


def _batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


def test_backend_matches_the_numpy_reference(backend: Backend, model: ModelVersion) -> None:
    k = 68 if model.manifest.scheme == "ibug68" else 19
    for stage, spec in enumerate(model.manifest.stages):
        x = _batch(5, spec.input_size, seed=stage)
        out = backend.run(stage, x)
        assert out.shape == (5, 2 * k) and out.dtype == np.float32
        seed = 100 * stage + len(model.manifest.scheme)
        np.testing.assert_allclose(
            out, reference(x, model.manifest.scheme, seed), atol=TOLERANCE[backend.name]
        )


def test_rows_do_not_depend_on_the_batch(backend: Backend, model: ModelVersion) -> None:
    size = model.manifest.stages[0].input_size
    x = _batch(8, size, seed=3)
    together = backend.run(0, x)
    alone = np.concatenate([backend.run(0, x[i : i + 1]) for i in range(8)])
    np.testing.assert_allclose(together, alone, atol=TOLERANCE[backend.name])
    np.testing.assert_allclose(backend.run(0, x[2:5]), together[2:5], atol=TOLERANCE[backend.name])


def test_warmup_and_input_checks(backend: Backend, model: ModelVersion) -> None:
    backend.warmup(8)
    size = model.manifest.stages[0].input_size
    with pytest.raises(ValueError):
        backend.run(0, np.zeros((2, 3, size + 1, size), np.float32))
    with pytest.raises(ValueError):
        backend.run(0, np.zeros((3, size, size), np.float32))
    out = backend.run(0, np.zeros((1, 3, size, size), np.float64))  # other dtypes are converted
    assert out.dtype == np.float32


def test_unknown_backend_kind() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("tvm", None)  # type: ignore[arg-type]


def test_runtime_knows_no_torch_backend_until_train_registers_it() -> None:
    """The runtime never imports torch: its kinds are onnxruntime and tensorrt; train.backends adds torch."""
    import subprocess
    import sys

    code = (
        "import sys; from runtime.backends import BACKENDS; print(sorted(BACKENDS)); "
        "import train.backends; print(sorted(BACKENDS)); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == [
        "['onnxruntime', 'tensorrt']",
        "['onnxruntime', 'tensorrt', 'torch']",
        "False",
    ], out


def test_torch_backend_rebuilds_a_training_checkpoint(tmp_path: Path) -> None:
    """The reference backend also loads train.loop's checkpoint dict through train.models."""
    torch = pytest.importorskip("torch")
    try:
        from train.models import create_model
    except ImportError as exc:
        pytest.skip(f"train.models is not available: {exc}")
    from model_store.manifest import Manifest, StageSpec
    from train.backends.torch import TorchBackend

    torch.manual_seed(0)
    net = create_model("cnn6", 19).eval()
    ckpt = {"model": net.state_dict(), "architecture": "cnn6", "model_kwargs": {}, "num_points": 19}
    torch.save(ckpt, tmp_path / "stage1.pt")
    stage = StageSpec(name="stage1", architecture="cnn6", input_size=64, file="stage1.onnx", sha256="0" * 64,
                      checkpoint="stage1.pt")  # fmt: skip
    manifest = Manifest(name="ck", version="1", scheme="aflw19", stages=[stage])
    backend = TorchBackend(ModelVersion("ck", "1", tmp_path, manifest))
    x = _batch(3, 64)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.run(0, x), expected, atol=1e-5)


def test_tensorrt_case_runs_where_tensorrt_sees_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TensorRT case is gated on TensorRT/cuda-python's own answer, whatever torch says (the GPU
    image has no torch; torch here is a CPU build that reports no CUDA)."""
    import runtime.backends.tensorrt as te

    monkeypatch.setattr(te, "cuda_available", lambda: (True, "1 CUDA device(s), TensorRT 10.x"))
    assert _cuda_reason() is None
    monkeypatch.setattr(te, "cuda_available", lambda: (False, "TensorRT is not installed"))
    assert _cuda_reason() == "needs TensorRT + cuda-python + a CUDA device: TensorRT is not installed"
