"""CNN-6 and CNN-7 (Feng et al., CVPR 2018, Sec. 5.1 and Fig. 6).

CNN-6: 64x64x3 input, five blocks of conv3x3 -> BN -> ReLU -> 2x2 max-pool with
32-64-128-256-512 channels, then FC 1024 (ReLU) and FC 2K. CNN-7: 128x128x3 input and one
more block (512 channels). Batch norm folds into the convolutions at export.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from train.models.registry import register_model

__all__ = ["PlainCNN", "cnn6", "cnn7"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class PlainCNN(nn.Module):
    """Plain conv/pool trunk plus a two-layer regression head; output ``[N, 2K]`` crop units."""

    def __init__(self, num_points: int, input_size: int, channels: tuple[int, ...], fc: int = 1024) -> None:
        super().__init__()
        if input_size % (2 ** len(channels)):
            raise ValueError("input_size must be divisible by 2**num_blocks")
        self.input_size = input_size
        self.num_points = num_points
        blocks, cin = [], 3
        for cout in channels:
            blocks.append(_block(cin, cout))
            cin = cout
        self.features = nn.Sequential(*blocks)
        side = input_size // 2 ** len(channels)
        self.fc1 = nn.Linear(cin * side * side, fc)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(fc, 2 * num_points)
        # start at the crop centre: bias 0.5, small weights (faster, stabler start)
        nn.init.normal_(self.fc2.weight, std=1e-3)
        nn.init.constant_(self.fc2.bias, 0.5)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, S, S]`` -> ``[N, C*s*s]`` flattened trunk features."""
        return self.features(x).flatten(1)  # (N, C, s, s) -> (N, C*s*s)

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, C*s*s]`` -> ``[N, 2K]`` crop units."""
        return self.fc2(self.relu(self.fc1(features)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Warm-start from a published stage (a model-store ONNX file exported from this class).

        Export folds each batch norm into its convolution (``conv.weight`` scaled, a conv bias
        added), so the folded weights go into the convolutions and each batch norm becomes
        ``x + bias`` (weight 1, running mean 0, running variance ``1 - eps``): with the batch norms
        in eval mode (``freeze_bn: true`` in the stage config) the network computes exactly the
        published function, and fine-tuning starts there. Float16-stored weights are widened.
        Returns the ONNX initialiser names that were loaded.
        """
        from train.export.onnx import read_stage_weights

        weights = read_stage_weights(path)
        blocks = sum(1 for k in weights if k.startswith("features.") and k.endswith(".0.weight"))
        if blocks != len(self.features):
            raise ValueError(f"{path}: {blocks} conv blocks, this network has {len(self.features)}")
        own = self.state_dict()
        new: dict[str, Tensor] = {}
        used: list[str] = []
        for b, block in enumerate(self.features):
            assert isinstance(block, nn.Sequential)
            conv, bn = block[0], block[1]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            w, bias = weights.get(f"features.{b}.0.weight"), weights.get(f"features.{b}.0.bias")
            if w is None or bias is None or tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{path}: block {b} does not match this network ({self.input_size} px)")
            new[f"features.{b}.0.weight"] = torch.from_numpy(w)
            new[f"features.{b}.1.weight"] = torch.ones_like(bn.weight)
            new[f"features.{b}.1.bias"] = torch.from_numpy(bias)
            new[f"features.{b}.1.running_mean"] = torch.zeros_like(bn.running_mean)  # type: ignore[arg-type]
            new[f"features.{b}.1.running_var"] = torch.full_like(bn.running_var, 1.0 - bn.eps)  # type: ignore[arg-type]
            used += [f"features.{b}.0.weight", f"features.{b}.0.bias"]
        for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
            if name not in weights or tuple(weights[name].shape) != tuple(own[name].shape):
                raise ValueError(f"{path}: {name} missing or of another shape (points / input size differ)")
            new[name] = torch.from_numpy(weights[name])
            used.append(name)
        self.load_state_dict({**own, **new})
        return used


@register_model
def cnn6(num_points: int) -> PlainCNN:
    """CNN-6: 64x64 input, 5 conv blocks."""
    return PlainCNN(num_points, 64, (32, 64, 128, 256, 512))


@register_model
def cnn7(num_points: int) -> PlainCNN:
    """CNN-7: 128x128 input, 6 conv blocks."""
    return PlainCNN(num_points, 128, (32, 64, 128, 256, 512, 512))
