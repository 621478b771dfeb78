"""face-api's 68-point landmark network as a trainable stage (issue 18, lever 4: a pretrained student).

``@vladmandic/face-api`` 1.7.15 (npm, MIT) ships ``model/face_landmark_68_model.bin``, a network trained
on about 35k faces. Its architecture, read from the TypeScript sources in the same package
(``src/faceFeatureExtractor``, ``src/faceLandmarkNet``), written here in torch:

- input 112x112 RGB, ``(x - mean_rgb) / 255`` with mean_rgb (122.782, 117.001, 104.298): that is the
  stage's normalisation in the model manifest, so the network itself sees already normalised input;
- four dense blocks of 32, 64, 128, 256 channels. Each starts with a stride-2 convolution (a plain 3x3
  convolution in the first block, a depthwise-separable one after), followed by three depthwise-separable
  convolutions whose outputs are summed with every earlier output of the block (ReLU after each sum);
- a 7x7 average pool (the whole 7x7 map) and one fully connected layer to ``2K`` crop units (0..1).

TensorFlow's 'SAME' padding of a stride-2 convolution on an even side pads one pixel after, none
before; that is kept (an explicit pad) so the weights compute what they were trained to. The 68 points
are in the iBUG order; a 19-point (AFLW) head starts from the mean of the 68-point head's rows that
define each AFLW point (``model_store.meanshape.AFLW19_FROM_68``), so fine-tuning starts from a
sensible shape too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_store.meanshape import AFLW19_FROM_68
from train.models.registry import register_model

__all__ = [
    "FACE_API_CHANNELS",
    "FACE_API_MEAN_RGB",
    "FaceApiLandmarkNet",
    "faceapi68",
    "resolve_face_api_manifest",
    "widen_weights",
]

FACE_API_MEAN_RGB = (122.782, 117.001, 104.298)
FACE_API_CHANNELS = (32, 64, 128, 256)  # the four dense blocks' widths in face-api's network
SIDE = 7  # the last feature map's side at 112x112 input
MANIFEST = "model/face_landmark_68_model-weights_manifest.json"
PRETRAINED_ALIAS = "face-api"  # `pretrained: face-api` in a stage config: the npm package's weights
WEIGHTS_FILE = "model/face_landmark_68_model.bin"


def face_api_weights_record() -> dict[str, str]:
    """Where ``pretrained: face-api`` comes from, for a published model's provenance."""
    from train.export.detectors import FACE_API, sha256_file

    manifest = resolve_face_api_manifest()
    return {
        "source": f"npm {FACE_API[0]} {FACE_API[1]}",
        "file": WEIGHTS_FILE,
        "sha256": sha256_file(manifest.parents[1] / WEIGHTS_FILE),
        "licence": "MIT",
        "network": "face-api FaceLandmark68Net (trained by its authors on about 35k face images)",
    }


class SeparableConv(nn.Module):
    """Depthwise 3x3 (stride s, TF 'SAME') then pointwise 1x1 with bias."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=0, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(_same_pad(x, self.stride)))


class FirstConv(nn.Module):
    """The first block's plain 3x3 convolution (stride 2, TF 'SAME')."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=0, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_same_pad(x, 2))


def _same_pad(x: Tensor, stride: int) -> Tensor:
    """TF 'SAME' padding for a 3x3 kernel: (1, 1) at stride 1; (0, 1) at stride 2 on an even side."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError("stride-2 'SAME' padding here assumes even sides")
    return F.pad(x, (0, 1, 0, 1))


class DenseBlock(nn.Module):
    """conv0 (stride 2) -> three separable convs, each fed the ReLU of the sum of all earlier outputs."""

    def __init__(self, cin: int, cout: int, first: bool) -> None:
        super().__init__()
        self.conv0: nn.Module = FirstConv(cin, cout) if first else SeparableConv(cin, cout, 2)
        self.conv1 = SeparableConv(cout, cout, 1)
        self.conv2 = SeparableConv(cout, cout, 1)
        self.conv3 = SeparableConv(cout, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + out2 + out3))
        return F.relu(out1 + out2 + out3 + out4)


class IntegralHead(nn.Module):
    """Integral regression (Sun et al., ECCV 2018): the 7x7 map upsampled twice (transposed convolutions) to
    ``HEATMAP`` x ``HEATMAP``, one heat map per point, softmax over each map, and the point the expected
    position of its map: ``[N, C, 7, 7]`` -> ``[N, 2K]`` crop units (cell centres at ``(i + 0.5) / HEATMAP``).
    Trained with the Wing loss on those coordinates like the regression heads, so training, export and
    serving are unchanged."""

    def __init__(self, cin: int, num_points: int, width: int = 128) -> None:
        super().__init__()
        self.up: nn.Module = nn.Sequential(
            nn.ConvTranspose2d(cin, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, num_points, 1),
        )
        side = SIDE * 4
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
        self.register_buffer("centres", centres, persistent=False)

    def forward(self, fmap: Tensor) -> Tensor:
        heat = self.up(fmap)  # [N, K, S, S]
        n, k, side, _ = heat.shape
        prob = torch.softmax(heat.flatten(2), dim=2).view(n, k, side, side)
        centres: Tensor = self.centres  # type: ignore[assignment]  # a buffer
        x = (prob.sum(dim=2) * centres).sum(dim=2)  # marginal over rows -> expected column
        y = (prob.sum(dim=3) * centres).sum(dim=2)
        return torch.stack([x, y], dim=2).flatten(1)  # [N, 2K]: x0, y0, x1, ...


class FaceApiLandmarkNet(nn.Module):
    """face-api's FaceLandmark68Net trunk and head; ``[N, 3, 112, 112]`` (normalised) -> ``[N, 2K]``."""

    def __init__(
        self, num_points: int, channels: tuple[int, ...] = FACE_API_CHANNELS, head: str = "pool"
    ) -> None:
        super().__init__()
        if head not in ("pool", "flatten", "integral"):
            raise ValueError("head must be 'pool' (face-api's), 'flatten' or 'integral'")
        self.input_size = 112
        self.num_points = num_points
        self.head = head
        self.channels = tuple(int(c) for c in channels)
        blocks, cin = [], 3
        for i, cout in enumerate(channels):
            blocks.append(DenseBlock(cin, cout, first=i == 0))
            cin = cout
        self.features = nn.Sequential(*blocks)
        if head == "integral":
            self.decoder: nn.Module = IntegralHead(cin, num_points)
        else:
            self.fc = nn.Linear(cin * (SIDE * SIDE if head == "flatten" else 1), 2 * num_points)
            nn.init.normal_(self.fc.weight, std=1e-3)
            nn.init.constant_(self.fc.bias, 0.5)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, 112, 112]`` -> ``[N, 256]`` (the 7x7 map averaged; face-api's head) or ``[N, 256*49]``
        (the map flattened: the ``flatten`` head keeps where on the map a feature fired)."""
        fmap = self.features(x)
        if self.head == "integral":
            return fmap
        return fmap.flatten(1) if self.head == "flatten" else fmap.mean(dim=(2, 3))

    def forward_head(self, features: Tensor) -> Tensor:
        """features -> ``[N, 2K]`` crop units."""
        return self.decoder(features) if self.head == "integral" else self.fc(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load face-api's weights: ``face-api`` (the npm package, fetched once) or a tfjs manifest path.

        An ONNX file exported from this class (a published stage; ``FILE.onnx#turned``: one network of
        a pose-gated stage) is loaded by name instead. Returns the names of the tensors that were loaded.
        """
        if str(path).partition("#")[0].endswith(".onnx"):  # FILE.onnx#MEMBER: one network of a gated graph
            return self._load_onnx(path)
        from train.export.detectors import read_tfjs_weights

        manifest = resolve_face_api_manifest() if str(path) == PRETRAINED_ALIAS else Path(path)
        weights = read_tfjs_weights(manifest)
        new: dict[str, np.ndarray] = {}
        for b, block in enumerate(self.features):
            assert isinstance(block, DenseBlock)
            for c in range(4):
                key = f"dense{b}/conv{c}"
                prefix = f"features.{b}.conv{c}"
                if f"{key}/filters" in weights:  # the first block's plain conv: HWIO -> OIHW
                    new[f"{prefix}.conv.weight"] = weights[f"{key}/filters"].transpose(3, 2, 0, 1)
                    new[f"{prefix}.conv.bias"] = weights[f"{key}/bias"]
                else:  # depthwise [3, 3, C, 1] -> [C, 1, 3, 3]; pointwise [1, 1, I, O] -> [O, I, 1, 1]
                    new[f"{prefix}.depthwise.weight"] = weights[f"{key}/depthwise_filter"].transpose(
                        2, 3, 0, 1
                    )
                    new[f"{prefix}.pointwise.weight"] = weights[f"{key}/pointwise_filter"].transpose(
                        3, 2, 0, 1
                    )
                    new[f"{prefix}.pointwise.bias"] = weights[f"{key}/bias"]
        fc_w, fc_b = weights["fc/weights"].T, weights["fc/bias"]  # [136, 256], [136]
        if self.num_points == 19:  # AFLW-19: each point the mean of its 68-point rows
            fc_w, fc_b = _aflw19_rows(fc_w), _aflw19_rows(fc_b[:, None])[:, 0]
        if self.num_points in (68, 19):
            new["fc.weight"], new["fc.bias"] = fc_w, fc_b
        try:
            return self.load_weights(new, strict=False)
        except ValueError as exc:
            raise ValueError(f"{manifest}: {exc}") from None

    def _load_onnx(self, path: str | Path) -> list[str]:
        from train.export.onnx import read_stage_weights

        try:  # an integral head is not in a published (regression-head) stage: it starts untrained
            return self.load_weights(read_stage_weights(path), strict=self.head != "integral")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def load_weights(
        self, arrays: Mapping[str, np.ndarray], *, strict: bool = True, seed: int = 0
    ) -> list[str]:
        """Load another face-api network's weights by name (an ONNX export's, a checkpoint's, face-api's).

        A pooled head is spread over the map for a ``flatten`` head; a narrower network (fewer channels
        per block) is widened to this one's channels by :func:`widen_weights`, so the wider network
        starts as exactly the function of the narrower one. ``strict``: every tensor of this network must
        be given (else those not given keep their initial values). Returns the names loaded.
        """
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        widths = [f"features.{b}.conv1.pointwise.weight" for b in range(len(self.channels))]
        if not all(w in arrays for w in widths):
            raise ValueError("not a face-api network's weights (no dense blocks)")
        old = tuple(int(arrays[w].shape[0]) for w in widths)
        if "fc.weight" in arrays and self.head == "flatten" and arrays["fc.weight"].shape[1] == old[-1]:
            arrays["fc.weight"] = _expand_pool_head(arrays["fc.weight"])  # a pooled head, spread over the map
        if old != self.channels:
            if "fc.weight" in arrays and (arrays["fc.weight"].shape[1] == old[-1]) != (self.head == "pool"):
                raise ValueError("a flatten-head network cannot be widened into a pooled head")
            arrays = widen_weights(arrays, self.channels, seed=seed, flatten_head=self.head == "flatten")
        own = self.state_dict()
        wrong = [k for k in own if k in arrays and tuple(arrays[k].shape) != tuple(own[k].shape)]
        missing = [k for k in own if k not in arrays] if strict else []
        if wrong or missing:
            raise ValueError(
                f"not a {type(self).__name__} for {self.num_points} points and channels {self.channels}: "
                f"{(wrong + missing)[:3]}"
            )
        loaded = sorted(k for k in own if k in arrays)
        self.load_state_dict({**own, **{k: _t(arrays[k]) for k in loaded}})
        return loaded


def widen_weights(
    arrays: dict[str, np.ndarray], channels: tuple[int, ...], *, seed: int = 0, flatten_head: bool = True
) -> dict[str, np.ndarray]:
    """A face-api network's weights widened to ``channels`` per block, computing the same function.

    Net2WiderNet (Chen et al. 2016) for this network: block ``b``'s new channel ``j`` copies old channel
    ``j mod C_b`` (its depthwise kernel, the rows of the pointwise convolutions and biases that make it),
    and every layer that reads block ``b``'s channels splits each old input weight among that channel's
    copies. The dense blocks sum their outputs channel by channel, so one mapping serves the whole block.
    The split fractions are random per output row (summing to one over the copies), so copies with
    identical inputs get different gradients and grow apart during training.
    """
    rng = np.random.default_rng(seed)
    n_blocks = len(channels)
    maps = []
    for b, new in enumerate(channels):
        old = int(arrays[f"features.{b}.conv1.pointwise.weight"].shape[0])
        if new < old:
            raise ValueError(f"block {b}: cannot narrow {old} channels to {new}")
        maps.append(np.arange(new) % old)

    def split(rows: int, mapping: np.ndarray) -> np.ndarray:
        """``[rows, len(mapping)]`` fractions: for each row they sum to 1 over each old channel's copies."""
        r = rng.uniform(0.5, 1.5, (rows, len(mapping)))
        totals = np.zeros((rows, int(mapping.max()) + 1))
        np.add.at(totals.T, mapping, r.T)
        return r / totals[:, mapping]

    out = dict(arrays)
    for b in range(n_blocks):
        g = maps[b]
        g_in = maps[b - 1] if b else None
        for c in range(4):
            prefix = f"features.{b}.conv{c}"
            if f"{prefix}.conv.weight" in arrays:  # the first block's plain convolution reads RGB
                out[f"{prefix}.conv.weight"] = arrays[f"{prefix}.conv.weight"][g]
                out[f"{prefix}.conv.bias"] = arrays[f"{prefix}.conv.bias"][g]
                continue
            src = g_in if c == 0 else g  # conv0 reads the previous block, conv1-3 this block
            assert src is not None
            dw = arrays[f"{prefix}.depthwise.weight"]  # [Cin, 1, 3, 3]
            pw = arrays[f"{prefix}.pointwise.weight"]  # [Cout, Cin, 1, 1]
            out[f"{prefix}.depthwise.weight"] = dw[src]
            frac = split(len(g), src)
            out[f"{prefix}.pointwise.weight"] = (pw[g][:, src, 0, 0] * frac)[:, :, None, None].astype(
                pw.dtype
            )
            out[f"{prefix}.pointwise.bias"] = arrays[f"{prefix}.pointwise.bias"][g]
    fc = arrays["fc.weight"]  # [2K, C] pooled or [2K, C*49] flattened
    last = maps[-1]
    frac = split(fc.shape[0], last)
    if flatten_head:
        per = fc.reshape(fc.shape[0], -1, SIDE * SIDE)[:, last, :] * frac[:, :, None]
        out["fc.weight"] = per.reshape(fc.shape[0], -1).astype(fc.dtype)
    else:
        out["fc.weight"] = (fc[:, last] * frac).astype(fc.dtype)
    return out


def _expand_pool_head(w: np.ndarray) -> np.ndarray:
    """``[2K, C]`` weights of a head on the averaged map -> ``[2K, C*49]`` on the flattened map, the same
    function: each channel's weight spread evenly over its 49 positions (flatten order c*49 + p)."""
    return np.repeat(w, SIDE * SIDE, axis=1) / (SIDE * SIDE)


def _t(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _aflw19_rows(rows68: np.ndarray) -> np.ndarray:
    """``[136, D]`` head rows (x0, y0, x1, ...) -> ``[38, D]``: AFLW rows as means of 68-point rows."""
    pts = rows68.reshape(68, 2, -1)
    return np.stack([pts[list(idx)].mean(axis=0) for idx in AFLW19_FROM_68]).reshape(38, -1)


def resolve_face_api_manifest(cache: Path | None = None) -> Path:
    """The face-api package's 68-point weight manifest, fetched with npm into ``cache/detectors`` once."""
    from train.export.detectors import FACE_API, default_cache, fetch_npm

    return fetch_npm(*FACE_API, cache or default_cache()) / MANIFEST


@register_model
def faceapi68(
    num_points: int, head: str = "pool", channels: tuple[int, ...] | list[int] = FACE_API_CHANNELS
) -> FaceApiLandmarkNet:
    """face-api's 68-point landmark network (112x112, dense separable blocks, 0.35 MB of weights);
    ``head="flatten"``: the last layer reads the whole 7x7 map (started as face-api's pooled head);
    ``channels``: wider blocks than face-api's (32, 64, 128, 256), started from a narrower network's
    weights as the same function (:func:`widen_weights`)."""
    return FaceApiLandmarkNet(num_points, channels=tuple(channels), head=head)
