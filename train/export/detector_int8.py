"""An int8 copy of face-api's SSD MobileNet-V1 ONNX file, for CPUs with int8 dot products (VNNI).

``wingmark data detectors --int8`` (after the float file exists): ONNX Runtime's static quantisation
(``onnxruntime.quantization.quantize_static``; QOperator format: QLinearConv; weights int8 per output
channel, activations uint8; MinMax ranges) of ``ssd_mobilenet_v1.onnx`` into
``ssd_mobilenet_v1_int8.onnx``. The activation ranges come from the whole-image views of the photos
that ship in the same npm package (``demo/*.jpg``). The record (``source.json``'s ``int8``) holds the
calibration photos and their sha256, the onnxruntime version, the file's sha256, and the check: the
largest score difference from the float net on the demo photos, and whether the same faces (score
>= 0.3) come out.

On this project's CPU (AMD EPYC, avx512_vnni) the net takes 30 ms instead of 67 ms a 512x512 view
(one thread). ``runtime.detectors.ssd_mobilenet_v1`` reads it with ``int8=True``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INT8_FILE", "quantise_ssd"]

INT8_FILE = "ssd_mobilenet_v1_int8.onnx"


def _views(photos: list[Path]) -> list[np.ndarray]:
    from PIL import Image, ImageOps

    from runtime.detectors.cnn import View, view_input

    out = []
    for p in photos:
        with Image.open(p) as im:
            rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        out.append(view_input(rgb, View(0.0, 0.0, float(max(rgb.shape[:2]))), 512))
    return out


def quantise_ssd(folder: Path, package_root: Path) -> dict[str, Any]:
    """``folder/ssd_mobilenet_v1.onnx`` -> ``folder/ssd_mobilenet_v1_int8.onnx``; the record is added to
    ``folder/source.json`` under ``int8`` and returned. ``package_root``: face-api's unpacked package."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from train.export.detectors import sha256_file
    from train.export.quantize import CropCalibrationReader

    src = folder / "ssd_mobilenet_v1.onnx"
    dst = folder / INT8_FILE
    photos = sorted((package_root / "demo").glob("*.jpg"))
    if not photos:
        raise FileNotFoundError(f"no demo photos in {package_root / 'demo'}")
    views = _views(photos)

    class _Reader(CropCalibrationReader, CalibrationDataReader):  # one view a batch, in photo order
        pass

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        quantize_static(
            str(pre),
            str(dst),
            _Reader(np.concatenate(views), "image", batch_size=1),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    check = compare(src, dst, views)
    record = {
        "onnx": dst.name,
        "onnx_sha256": sha256_file(dst),
        "from": src.name,
        "method": "onnxruntime.quantization.quantize_static, QOperator, int8 weights per channel, "
        "uint8 activations, MinMax",
        "onnxruntime": ort.__version__,
        "calibration_photos": {f"demo/{p.name}": sha256_file(p) for p in photos},
        "check": check,
    }
    source = folder / "source.json"
    data = json.loads(source.read_text()) if source.is_file() else {}
    data["int8"] = record
    source.write_text(json.dumps(data, indent=1) + "\n")
    return record


def compare(float_file: Path, int8_file: Path, views: list[np.ndarray]) -> dict[str, Any]:
    """Scores of the two nets on the same views: the largest difference, and the faces (score >= 0.3,
    after NMS) each finds and how many of the float net's the int8 net finds (box IoU >= 0.5)."""
    import onnxruntime as ort

    from runtime.detectors.base import box_iou
    from runtime.detectors.cnn import nms
    from runtime.detectors.ssd_mobilenet_v1 import decode_ssd

    def faces(out: list[np.ndarray]) -> np.ndarray:
        boxes, scores = decode_ssd(out[0][0], out[2]), np.asarray(out[1][0], dtype=np.float64)
        keep = np.nonzero(scores >= 0.3)[0]
        return boxes[keep][nms(boxes[keep], scores[keep], 0.5)]

    a = ort.InferenceSession(str(float_file), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8_file), providers=["CPUExecutionProvider"])
    worst = 0.0
    found = same = 0
    for x in views:
        oa, ob = a.run(None, {"image": x}), b.run(None, {"image": x})
        worst = max(worst, float(np.abs(oa[1] - ob[1]).max()))
        fa, fb = faces(oa), faces(ob)
        found += len(fa)
        if len(fa) and len(fb):
            same += int((box_iou(fa, fb).max(axis=1) >= 0.5).sum())
    return {
        "views": len(views),
        "max_score_diff": round(worst, 4),
        "faces_float": found,
        "faces_int8_same": same,
    }
