"""MediaPipe's face-landmark network as a trainable stage (issue 18, lever 4: a pretrained student).

The PyPI ``mediapipe`` 0.10.21 wheel (Apache-2.0) ships
``mediapipe/modules/face_landmark/face_landmark.tflite``, the Face Mesh network (Kartynnik et al.,
"Real-time Facial Surface Geometry from Monocular Video on Mobile GPUs", 2019), trained by Google on far
more faces than this project has. Its graph, read from the flatbuffer (97 operators of six kinds; fp16
weights), written here in torch:

- input 192x192 RGB in 0..1 (the stage's normalisation: mean 0, std 255);
- a 3x3 stride-2 convolution to 16 channels and PReLU;
- residual blocks: depthwise 3x3 (TF 'SAME') then pointwise 1x1, added to the block's input (at stride
  2 the input is max-pooled 2x2 and zero-padded to the new channel count), then PReLU; 14 blocks down to
  a 6x6x128 map, then the mesh branch's three blocks to 3x3x128, a 1x1 convolution to 32 channels with
  PReLU, one more 32-channel block and a 3x3 'VALID' convolution to 1,404 numbers: 468 points (x, y, z)
  in input pixels. (The graph's second branch, a face-presence score, is left out.)

The 68-point head is a linear layer on the 468 points' (x, y) divided by 192 (crop units), started as a
selection (:data:`MESH_TO_68`: the mesh vertex nearest each iBUG point), so the untrained network already
reads MediaPipe's mesh as 68 points; Wing-loss fine-tuning then trains trunk and head together.
TFLite's 'SAME' padding of a stride-2 convolution on an even side pads one pixel after, none before; that
is kept so that the weights compute what they were trained to (checked against TFLite's own interpreter
in ``tests/train/models/test_mediapipe.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.models.registry import register_model

__all__ = [
    "MESH_FILE",
    "MESH_POINTS",
    "MediaPipeMeshNet",
    "mediapipe68",
    "mesh_weights_record",
    "read_tflite_weights",
    "resolve_mesh_tflite",
    "run_tflite_reference",
    "selection_head",
]

MESH_FILE = "mediapipe/modules/face_landmark/face_landmark.tflite"
MESH_POINTS = 468
INPUT = 192
PRETRAINED_ALIAS = "mediapipe"  # `pretrained: mediapipe` in a stage config: the wheel's Face Mesh weights

# (input channels, output channels, stride, depthwise layer, pointwise layer, PReLU) of each residual
# block, in graph order: the TFLite layer names, so the weights load by name.
_TRUNK = [
    (16, 16, 1, 1, 2, 2),
    (16, 16, 1, 2, 3, 3),
    (16, 32, 2, 3, 4, 4),
    (32, 32, 1, 4, 5, 5),
    (32, 32, 1, 5, 6, 6),
    (32, 64, 2, 6, 7, 7),
    (64, 64, 1, 7, 8, 8),
    (64, 64, 1, 8, 9, 9),
    (64, 128, 2, 9, 10, 10),
    (128, 128, 1, 10, 11, 11),
    (128, 128, 1, 11, 12, 12),
    (128, 128, 2, 12, 13, 13),
    (128, 128, 1, 13, 14, 14),
    (128, 128, 1, 14, 15, 15),
    (128, 128, 2, 15, 16, 16),  # the mesh branch from here (6x6 -> 3x3)
    (128, 128, 1, 16, 17, 17),
    (128, 128, 1, 17, 18, 18),
]
_SQUEEZE = (19, 19)  # 1x1 conv 128 -> 32 (conv2d_19) and its PReLU (p_re_lu_19)
_LAST_BLOCK = (32, 32, 1, 18, 20, 20)
_OUT = 21  # conv2d_21: 3x3 'VALID' 32 -> 1404

# For each iBUG 68-point landmark, the Face Mesh vertex nearest to it on average over the real-face
# cache's training faces (``train.data.real.fit_mesh_to_68``, the same list ``cache/real/manifest.json``
# records as ``mesh_to_68``): the head starts as this selection, so an untrained head already reads
# MediaPipe's mesh as 68 points.
MESH_TO_68 = (
    127, 227, 177, 215, 172, 136, 149, 148, 152, 377, 378, 365, 397, 435, 401, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    7, 160, 158, 155, 153, 144, 382, 385, 386, 249, 373, 380,
    61, 39, 37, 11, 267, 304, 291, 405, 314, 17, 84, 181, 62, 38, 12, 268, 292, 317, 14, 87,
)  # fmt: skip


def _same_pad(x: Tensor, stride: int) -> Tensor:
    """TFLite 'SAME' padding for a 3x3 kernel: (1, 1) at stride 1; (0, 1) at stride 2, where every side is
    even (192, 96, 48, 24, 12, 6)."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class PReLU(nn.PReLU):
    """``nn.PReLU`` (the same ``weight``, one slope per channel) written as ``(1 - a) relu(x) + a x``, which
    exports to Relu, Mul and Add instead of ONNX ``PRelu``. ONNX Runtime's CPU kernel for ``PRelu`` with
    per-channel slopes, and the layout changes it forces around it, took 55 % of the stage's time (one
    thread, batch 32, AMD EPYC avx2); written this way the exported stage runs about twice as fast. Equal
    to ``nn.PReLU`` up to float rounding (tests/train/models/test_mediapipe.py)."""

    def forward(self, x: Tensor) -> Tensor:
        a = self.weight.reshape(1, -1, 1, 1)  # [N, C, H, W] input
        return torch.relu(x) * (1.0 - a) + x * a


class ResidualBlock(nn.Module):
    """PReLU(pointwise(depthwise(x)) + shortcut(x)); the shortcut max-pools 2x2 and zero-pads channels at
    stride 2."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = cout - cin
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin, bias=True)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)
        self.act = PReLU(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pointwise(self.depthwise(_same_pad(x, self.stride)))
        skip = F.max_pool2d(x, 2) if self.stride == 2 else x
        if self.extra:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra))
        return self.act(y + skip)


class MediaPipeMeshNet(nn.Module):
    """Face Mesh's trunk and mesh output plus a linear 68- (or K-) point head;
    ``[N, 3, 192, 192]`` (0..1) -> ``[N, 2K]`` crop units."""

    def __init__(self, num_points: int) -> None:
        super().__init__()
        self.input_size = INPUT
        self.num_points = num_points
        self.stem = nn.Conv2d(3, 16, 3, stride=2, bias=True)
        self.stem_act = PReLU(16)
        self.blocks = nn.Sequential(*(ResidualBlock(ci, co, s) for ci, co, s, *_ in _TRUNK))
        self.squeeze = nn.Conv2d(128, 32, 1, bias=True)
        self.squeeze_act = PReLU(32)
        self.last = ResidualBlock(*_LAST_BLOCK[:3])
        self.mesh = nn.Conv2d(32, 3 * MESH_POINTS, 3, bias=True)
        with torch.no_grad():  # untrained, every mesh point sits at the crop's centre (depth 0)
            self.mesh.weight.zero_()
            bias: Tensor = self.mesh.bias  # type: ignore[assignment]  # bias=True
            bias.copy_(torch.tensor([INPUT / 2, INPUT / 2, 0.0]).repeat(MESH_POINTS))
        self.head = nn.Linear(2 * MESH_POINTS, 2 * num_points)
        with torch.no_grad():  # the head maps a mesh at the centre (0.5) to points at the centre
            self.head.weight.copy_(torch.from_numpy(selection_head(num_points)))
            self.head.bias.copy_(0.5 * (1.0 - self.head.weight.sum(dim=1)))

    def mesh_points(self, x: Tensor) -> Tensor:
        """``[N, 3, 192, 192]`` -> ``[N, 468, 3]``: MediaPipe's mesh in input pixels (x, y, depth)."""
        y = self.stem_act(self.stem(_same_pad(x, 2)))
        y = self.last(self.squeeze_act(self.squeeze(self.blocks(y))))
        return self.mesh(y).reshape(-1, MESH_POINTS, 3)

    def forward_features(self, x: Tensor) -> Tensor:
        """``[N, 3, 192, 192]`` -> ``[N, 936]``: the mesh's (x, y) in crop units, x0, y0, x1, ..."""
        return (self.mesh_points(x)[:, :, :2] / INPUT).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        """``[N, 936]`` -> ``[N, 2K]`` crop units."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, path: str | Path) -> list[str]:
        """Load the Face Mesh weights: ``mediapipe`` (the wheel's file) or a ``.tflite`` path. The head is
        left as it is. Returns the names of the tensors loaded. (A later run starts from a training
        checkpoint, ``.pt``; an exported stage does not keep every tensor under its torch name: the
        exporter merges equal constants and renames PReLU slopes.)"""
        if str(path).partition("#")[0].endswith(".onnx"):
            raise ValueError(f"{path}: start a {type(self).__name__} from a training checkpoint (.pt)")
        tfl = resolve_mesh_tflite() if str(path) == PRETRAINED_ALIAS else Path(path)
        return self.load_weights(tflite_to_state(read_tflite_weights(tfl)), strict=False)

    def load_weights(self, arrays: Mapping[str, np.ndarray], *, strict: bool = True) -> list[str]:
        """Load tensors by name; ``strict``: every tensor of this network must be given. Returns the names."""
        own = self.state_dict()
        wrong = [k for k in own if k in arrays and tuple(np.shape(arrays[k])) != tuple(own[k].shape)]
        missing = [k for k in own if k not in arrays] if strict else []
        if wrong or missing:
            bad = (wrong + missing)[:3]
            raise ValueError(f"not a {type(self).__name__} for {self.num_points} points: {bad}")
        loaded = sorted(k for k in own if k in arrays)
        self.load_state_dict(
            {**own, **{k: torch.from_numpy(np.ascontiguousarray(arrays[k], np.float32)) for k in loaded}}
        )
        return loaded


def selection_head(num_points: int) -> np.ndarray:
    """``[2K, 936]`` head weights that read K points off the mesh: the 68 points of :data:`MESH_TO_68`; 19
    (AFLW) points each the mean of its 68-point rows (``model_store.meanshape.AFLW19_FROM_68``); for other
    K, zeros (the head then starts at its bias, the crop's centre)."""
    from model_store.meanshape import AFLW19_FROM_68

    rows68 = np.zeros((68, 2 * MESH_POINTS), np.float32)  # x rows; a y row is the same shifted by one
    rows68[np.arange(68), 2 * np.asarray(MESH_TO_68)] = 1.0
    if num_points == 68:
        rows = rows68
    elif num_points == 19:
        rows = np.stack([rows68[list(idx)].mean(axis=0) for idx in AFLW19_FROM_68])
    else:
        return np.zeros((2 * num_points, 2 * MESH_POINTS), np.float32)
    out = np.zeros((2 * num_points, 2 * MESH_POINTS), np.float32)
    out[0::2] = rows
    out[1::2, 1:] = rows[:, :-1]
    return out


def read_tflite_weights(path: Path) -> dict[str, np.ndarray]:
    """Every constant tensor of a ``.tflite`` file with data, by name, as float32 (fp16 widened) or int32."""
    import tflite  # PyPI ``tflite``: the flatbuffer schema's generated reader (train extra)

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    dtypes = {
        tflite.TensorType.FLOAT32: np.float32,
        tflite.TensorType.FLOAT16: np.float16,
        tflite.TensorType.INT32: np.int32,
    }
    out: dict[str, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        data = model.Buffers(t.Buffer())
        if not data.DataLength() or t.Type() not in dtypes:
            continue
        raw = np.frombuffer(data.DataAsNumpy().tobytes(), dtypes[t.Type()])
        arr = raw.reshape(t.ShapeAsNumpy()) if t.ShapeLength() else raw
        out[t.Name().decode()] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
    return out


def tflite_to_state(w: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Face Mesh tensors (TFLite layouts: conv OHWI, depthwise 1HWC, PReLU alpha 11C) as this module's
    state-dict entries (OIHW; PReLU weight [C])."""

    def conv(n: int) -> tuple[np.ndarray, np.ndarray]:
        return w[f"conv2d_{n}/Kernel"].transpose(0, 3, 1, 2), w[f"conv2d_{n}/Bias"]

    def depthwise(n: int) -> tuple[np.ndarray, np.ndarray]:
        k = w[f"depthwise_conv2d_{n}/Kernel"]  # [1, 3, 3, C]
        return k.transpose(3, 0, 1, 2), w[f"depthwise_conv2d_{n}/Bias"]

    def prelu(n: int) -> np.ndarray:
        return w[f"p_re_lu_{n}/Alpha"].reshape(-1)

    state: dict[str, np.ndarray] = {}

    def block(prefix: str, dw: int, pw: int, act: int) -> None:
        state[f"{prefix}.depthwise.weight"], state[f"{prefix}.depthwise.bias"] = depthwise(dw)
        state[f"{prefix}.pointwise.weight"], state[f"{prefix}.pointwise.bias"] = conv(pw)
        state[f"{prefix}.act.weight"] = prelu(act)

    state["stem.weight"], state["stem.bias"] = conv(1)
    state["stem_act.weight"] = prelu(1)
    for b, (*_, dw, pw, act) in enumerate(_TRUNK):
        block(f"blocks.{b}", dw, pw, act)
    state["squeeze.weight"], state["squeeze.bias"] = conv(_SQUEEZE[0])
    state["squeeze_act.weight"] = prelu(_SQUEEZE[1])
    block("last", *_LAST_BLOCK[3:])
    state["mesh.weight"], state["mesh.bias"] = conv(_OUT)
    return state


def resolve_mesh_tflite(cache: Path | None = None) -> Path:
    """``face_landmark.tflite`` from the ``mediapipe`` wheel, fetched with ``pip download`` into
    ``cache/detectors`` once and extracted beside it."""
    import zipfile

    from train.export.detectors import MEDIAPIPE, default_cache, fetch_wheel

    cache = cache or default_cache()
    out = cache / "mediapipe-mesh" / Path(MESH_FILE).name
    if not out.is_file():
        wheel = fetch_wheel(*MEDIAPIPE, cache)
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            out.write_bytes(zf.read(MESH_FILE))
    return out


LITERT = "ai-edge-litert==2.3.0"  # TFLite's interpreter (PyPI, Apache-2.0): the independent reference
_REFERENCE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
inp = it.get_input_details()[0]
out = [o for o in it.get_output_details() if o["shape"][-1] == 1404][0]
x = np.load(sys.argv[2]); res = []
for xi in x:
    it.set_tensor(inp["index"], xi[None].astype(np.float32)); it.invoke()
    res.append(it.get_tensor(out["index"]).reshape(-1))
np.save(sys.argv[3], np.stack(res))
"""


def run_tflite_reference(tfl: Path, x: np.ndarray, work: Path, cache: Path | None = None) -> np.ndarray:
    """The ``.tflite`` network run by TFLite's own interpreter on ``x [N, 192, 192, 3]`` (0..1) ->
    ``[N, 1404]``: the mesh in input pixels. The interpreter lives in a venv of its own under
    ``cache/detectors`` (it pins numpy and flatbuffers apart from the project's)."""
    import subprocess

    from train.export.detectors import default_cache, tool_python

    python = tool_python(cache or default_cache(), "litert-venv", LITERT)
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "x.npy", np.asarray(x, np.float32))
    args = [str(tfl), str(work / "x.npy"), str(work / "y.npy")]
    subprocess.run([str(python), "-c", _REFERENCE, *args], check=True)
    return np.asarray(np.load(work / "y.npy"), np.float32)


def mesh_weights_record() -> dict[str, Any]:
    """Where ``pretrained: mediapipe`` comes from, for a published model's provenance."""
    from train.export.detectors import MEDIAPIPE, sha256_file

    return {
        "source": f"PyPI {MEDIAPIPE[0]} {MEDIAPIPE[1]}",
        "file": MESH_FILE,
        "sha256": sha256_file(resolve_mesh_tflite()),
        "licence": "Apache-2.0",
        "network": "MediaPipe Face Mesh (468 points; Kartynnik et al. 2019), trained by Google",
    }


@register_model
def mediapipe68(num_points: int) -> MediaPipeMeshNet:
    """MediaPipe's Face Mesh network (192x192, residual depthwise blocks with PReLU, 2.4 MB of fp32
    weights) with a linear K-point head on its 468 mesh points."""
    return MediaPipeMeshNet(num_points)
