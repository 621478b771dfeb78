"""MediaPipe's Face Mesh network in torch against TFLite's own interpreter on the same file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.meanshape import AFLW19_FROM_68
from tests.service.photos import unavailable
from train.models.mediapipe import (
    MESH_POINTS,
    MESH_TO_68,
    MediaPipeMeshNet,
    mediapipe68,
    read_tflite_weights,
    resolve_mesh_tflite,
    run_tflite_reference,
    selection_head,
    tflite_to_state,
)

torch.set_num_threads(1)


def _tflite() -> Path:
    try:
        return resolve_mesh_tflite()
    except Exception as exc:
        unavailable(f"pip download mediapipe failed: {exc}")


def _crops() -> np.ndarray:
    """matplotlib's grace_hopper.jpg cut three ways around her face, and noise: [4, 192, 192, 3] 0..1."""
    from PIL import Image

    spec = importlib.util.find_spec("matplotlib")
    assert spec is not None and spec.origin is not None
    photo = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    boxes = [(80, 40, 440, 400), (120, 90, 400, 370), (0, 0, min(w, h), min(w, h))]
    crops = [
        np.asarray(img.crop(b).resize((192, 192), Image.Resampling.BILINEAR), np.float32) / 255 for b in boxes
    ]
    crops.append(np.random.default_rng(0).uniform(0, 1, (192, 192, 3)).astype(np.float32))
    return np.stack(crops)


def _mesh(model: MediaPipeMeshNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.mesh_points(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).reshape(len(x), -1).numpy()


def test_torch_port_matches_tflite_interpreter(tmp_path: Path) -> None:
    """The independent reference: TFLite's interpreter (ai-edge-litert) on the wheel's own file."""
    tfl = _tflite()
    x = _crops()
    try:
        ref = run_tflite_reference(tfl, x, tmp_path)
    except Exception as exc:
        unavailable(f"TFLite's interpreter could not be installed or run: {exc}")
    model = mediapipe68(68).eval()
    loaded = model.load_pretrained(tfl)
    assert len(loaded) == len(model.state_dict()) - 2  # everything but the 68-point head
    ours = _mesh(model, x)
    assert ref.shape == ours.shape == (4, 3 * MESH_POINTS)
    assert np.abs(ours - ref).max() < 1e-2  # input pixels; fp32 against fp32 (fp16 weights widened)
    # a real face: the mesh lies inside the crop and spans a face-sized part of it
    face = ref[0].reshape(MESH_POINTS, 3)
    assert face[:, 0].min() > 0 and face[:, 0].max() < 192 and np.ptp(face[:, 0]) > 60


def test_selection_head_reads_the_mesh_as_68_points() -> None:
    """An untrained head returns the mesh vertices of MESH_TO_68, (x, y) / 192; 19 points their AFLW means."""
    torch.manual_seed(0)
    model = mediapipe68(68).eval()
    with torch.no_grad():  # any mesh: random weights in the last convolution
        model.mesh.weight.normal_(std=0.5)
        x = torch.rand(2, 3, 192, 192)
        mesh = model.mesh_points(x)[:, :, :2] / 192
        out = model(x).reshape(2, 68, 2)
    assert torch.allclose(out, mesh[:, list(MESH_TO_68)], atol=1e-5)
    rows19 = selection_head(19)
    rows68 = selection_head(68)
    for k, idx in enumerate(AFLW19_FROM_68):
        assert np.allclose(rows19[2 * k], rows68[[2 * i for i in idx]].mean(0))
        assert np.allclose(rows19[2 * k + 1], rows68[[2 * i + 1 for i in idx]].mean(0))
    assert not selection_head(5).any()


@pytest.mark.parametrize("k", [68, 19, 5])
def test_fresh_network_starts_at_the_crop_centre(k: int) -> None:
    out = mediapipe68(k)(torch.rand(1, 3, 192, 192))
    assert out.shape == (1, 2 * k) and torch.allclose(out, torch.full_like(out, 0.5))


def test_every_tflite_tensor_finds_its_place() -> None:
    """tflite_to_state gives every trunk tensor of the module, in its shape, from the file's tensors."""
    weights = read_tflite_weights(_tflite())
    assert weights["conv2d_1/Kernel"].dtype == np.float32  # fp16 in the file, widened
    state = tflite_to_state(weights)
    own = mediapipe68(68).state_dict()
    assert set(own) - set(state) == {"head.weight", "head.bias"}
    for k, v in state.items():
        assert tuple(v.shape) == tuple(own[k].shape), k


def test_wrong_weights_are_refused() -> None:
    model = mediapipe68(68)
    with pytest.raises(ValueError, match="not a MediaPipeMeshNet"):
        model.load_weights({"stem.weight": np.zeros((16, 3, 5, 5), np.float32)})


def test_prelu_computes_torch_prelu_and_exports_without_onnx_prelu(tmp_path: Path) -> None:
    from train.export.onnx import count_ops, export_onnx
    from train.export.parity import onnx_runtime_session, run_onnx
    from train.models.mediapipe import PReLU

    act, ref = PReLU(4), torch.nn.PReLU(4)
    slopes = torch.tensor([-1.0, 0.0, 0.25, 1.4])  # Face Mesh's slopes span -1.0 .. 1.39
    for m in (act, ref):
        m.weight.data.copy_(slopes)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(act(x), ref(x), rtol=1e-6, atol=1e-6)
    assert set(act.state_dict()) == set(ref.state_dict())  # checkpoints and the TFLite loader unchanged
    # the exported stage (after onnxslim) has no PRelu node, and computes what the module computes
    model = mediapipe68(68).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    graph = export_onnx(model, tmp_path / "stage.onnx", 192)
    ops = count_ops(graph)
    assert "PRelu" not in ops and ops["Relu"] == 20
    crops = torch.rand(3, 3, 192, 192)
    with torch.no_grad():
        expected = model(crops).numpy()
    got = run_onnx(onnx_runtime_session(tmp_path / "stage.onnx"), crops.numpy())
    np.testing.assert_allclose(got, expected, atol=1e-4)
