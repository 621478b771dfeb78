from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from train.models import create_model, list_models
from train.models.resnet import ResNet50

torch.set_num_threads(1)

# keep the big network cheap: small batch and a reduced input where the model allows it
_TEST_INPUT = {"resnet50": 64}


def _make(name: str, k: int) -> Any:
    kwargs = {"input_size": _TEST_INPUT[name]} if name in _TEST_INPUT else {}
    return create_model(name, k, **kwargs)


def test_registry_lists_the_paper_models() -> None:
    assert {"cnn6", "cnn7", "resnet50"} <= set(list_models())
    with pytest.raises(ValueError):
        create_model("vgg19", 68)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("k", [68, 19])
def test_forward_backward_shape(name: str, k: int) -> None:
    torch.manual_seed(0)
    model = _make(name, k)
    s = int(model.input_size)
    n = 2
    x = torch.randn(n, 3, s, s)
    feats = model.forward_features(x)
    assert feats.ndim == 2 and feats.shape[0] == n
    out = model.forward_head(feats)
    assert out.shape == (n, 2 * k)
    assert torch.allclose(model(x), out)
    # fresh heads start near the crop centre (0.5 in crop units)
    assert float((out.detach() - 0.5).abs().max()) < 0.5
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_paper_input_sizes() -> None:
    assert create_model("cnn6", 68).input_size == 64
    assert create_model("cnn7", 68).input_size == 128
    assert create_model("resnet50", 68).input_size == 224


def test_resnet50_matches_torchvision_layout(tmp_path: Path) -> None:
    # With a 1000-way head the network is exactly torchvision's resnet50: 25,557,032 parameters.
    imagenet_like: Any = ResNet50(num_points=500)
    assert sum(p.numel() for p in imagenet_like.parameters()) == 25_557_032
    keys = set(imagenet_like.state_dict())
    for k in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.num_batches_tracked",
        "layer2.3.conv2.weight",
        "layer3.5.bn3.running_var",
        "layer4.2.conv3.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert k in keys
    assert len(keys) == 320  # torchvision's resnet50 state dict has 320 entries

    # a "pretrained" checkpoint file loads into a 68-point regressor, skipping only the classifier
    with torch.no_grad():
        imagenet_like.layer3[2].conv2.weight.fill_(0.123)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(imagenet_like.state_dict(), path)
    model: Any = ResNet50(num_points=68, input_size=64)
    skipped = model.load_pretrained(path)
    assert skipped == ["fc.bias", "fc.weight"]
    assert torch.all(model.layer3[2].conv2.weight == 0.123)
    assert model.fc.weight.shape == (136, 2048)

    # a checkpoint of something else is rejected loudly
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError):
        model.load_pretrained(bad)


@pytest.mark.parametrize(("stage", "arch"), [(1, "cnn6"), (2, "cnn7")])
def test_cnn_warm_start_from_a_published_onnx_stage_computes_the_published_function(stage, arch):
    import onnxruntime as ort

    from model_store.store import ModelStore
    from train.loop import _set_train_mode

    path = ModelStore().resolve("cnn67-ibug68", "2.0.0").path / f"stage{stage}_{arch}.onnx"
    from train.models.cnn import PlainCNN

    model = create_model(arch, num_points=68)
    assert isinstance(model, PlainCNN)
    loaded = model.load_pretrained(path)
    assert "fc2.weight" in loaded and "features.0.0.bias" in loaded
    x = torch.randn(3, 3, model.input_size, model.input_size) * 0.5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    model.eval()
    with torch.no_grad():
        got = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=2e-4)
    # freeze_bn keeps the batch norms in eval mode while training: the same function
    _set_train_mode(model, {"freeze_bn": True})
    first_bn = model.features[0][1]  # type: ignore[index]
    assert model.training and not first_bn.training
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), want, atol=2e-4)
    _set_train_mode(model, {"freeze_bn": False})  # plain train mode: batch statistics, another function
    with torch.no_grad():
        assert not np.allclose(model(x).numpy(), want, atol=1e-2)
    other = create_model("cnn7" if arch == "cnn6" else "cnn6", num_points=68)
    assert isinstance(other, PlainCNN)
    with pytest.raises(ValueError, match="conv blocks"):
        other.load_pretrained(path)
