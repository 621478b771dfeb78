"""ResNet-50 trunk with a landmark regression head (He et al. 2016; used by Feng et al. 2018).

Written here because torchvision is not a dependency. Module and parameter names follow
torchvision's ``resnet50`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
..., ``fc``) so an ImageNet checkpoint file supplied by the user loads with
:meth:`ResNet50.load_pretrained`; nothing is ever downloaded. Strides sit on the 3x3
convolution (the "v1.5" layout torchvision uses).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from train.models.registry import register_model

__all__ = ["Bottleneck", "ResNet50", "resnet50"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50(nn.Module):
    """ResNet-50 (3-4-6-3 bottlenecks) -> global average pool -> ``fc``: ``[N, 2K]`` crop units."""

    def __init__(self, num_points: int, input_size: int = 224) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError("input_size must be a multiple of 32")
        self.input_size = input_size
        self.num_points = num_points
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, 2 * num_points)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.constant_(self.fc.bias, 0.5)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self.inplanes, planes, stride)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, S, S]`` -> ``[N, 2048]`` pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, S/4, S/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 2048, S/32, S/32)
        return self.avgpool(x).flatten(1)  # (N, 2048)

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, 2048]`` -> ``[N, 2K]`` crop units."""
        return self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load a torchvision-format ResNet-50 state dict (e.g. ImageNet weights) from a local file.

        The classifier ``fc.*`` is skipped (its shape is the landmark head's). Every trunk tensor
        must be present with a matching shape, else ``ValueError``. Returns the skipped keys.
        """
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        own = self.state_dict()
        trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing = sorted(k for k in own if not k.startswith("fc.") and k not in trunk)
        unexpected = sorted(k for k in trunk if k not in own)
        if missing or unexpected:
            raise ValueError(
                f"not a ResNet-50 checkpoint: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        bad = [k for k, v in trunk.items() if tuple(v.shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"shape mismatch for {bad[:5]}")
        self.load_state_dict(trunk, strict=False)
        return sorted(k for k in state if k.startswith("fc."))


@register_model
def resnet50(num_points: int, input_size: int = 224) -> ResNet50:
    """ResNet-50 regression network (paper: 224x224 input)."""
    return ResNet50(num_points, input_size)
