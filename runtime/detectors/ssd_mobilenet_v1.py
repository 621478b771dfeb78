"""face-api's SSD MobileNet-V1 face detector (npm ``@vladmandic/face-api`` 1.7.15, MIT), as ONNX.

The net sees a 512x512 view (:mod:`runtime.detectors.cnn`) and scores 5,118 SSD priors; boxes are
decoded here from the priors the ONNX file returns (``priors`` output, constant) with the SSD
"10, 10, 5, 5" box-coder scaling, as face-api's ``outputLayer`` does. No keypoints.

Score threshold: 0.3 by default (face-api's own ``minConfidence`` default is 0.5). On the real photos
(118 stills and 100 video frames of the real-face cache) 0.3 finds all 209 labelled faces, 0.5 finds
196, for 3 more detections that match no face the teachers found (66 -> 69; most of those are faces
the teachers missed, see docs/detectors.md). NMS IoU 0.5 as face-api.

``int8=True`` reads ``ssd_mobilenet_v1_int8.onnx`` instead (``wingmark data detectors --int8``: ONNX
Runtime's static int8 quantisation of the float file, ``train.export.detector_int8``): about 2.2x faster
on a CPU with VNNI, scores within 0.07 of the float net's on face-api's demo photos.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.detectors import register_detector
from runtime.detectors.cnn import CnnDetector

__all__ = ["SsdMobilenetV1Detector", "decode_ssd"]


def decode_ssd(encodings: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """SSD box decoding: encodings [N, 4] (ty, tx, th, tw) and priors [N, 4] (ymin, xmin, ymax, xmax)
    -> boxes [N, 4] x1, y1, x2, y2 in the priors' units.

    centre = prior centre + t / 10 * prior size; size = prior size * exp(t / 5).
    """
    enc = np.asarray(encodings, dtype=np.float64).reshape(-1, 4)
    pri = np.asarray(priors, dtype=np.float64).reshape(-1, 4)
    ph, pw = pri[:, 2] - pri[:, 0], pri[:, 3] - pri[:, 1]
    cy, cx = pri[:, 0] + ph / 2 + enc[:, 0] / 10 * ph, pri[:, 1] + pw / 2 + enc[:, 1] / 10 * pw
    h, w = ph * np.exp(enc[:, 2] / 5), pw * np.exp(enc[:, 3] / 5)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


@register_detector("ssd_mobilenet_v1")
class SsdMobilenetV1Detector(CnnDetector):
    name = "ssd_mobilenet_v1"
    net_side = 512
    smallest = 20.0  # px of the 512 input (see docs/detectors.md: recall by face size)
    default_score_threshold = 0.3
    default_nms_iou = 0.5

    def __init__(self, *, int8: bool = False, **options: Any) -> None:
        self.int8 = int8
        super().__init__(**options)

    def _onnx_file(self) -> str | None:
        return "ssd_mobilenet_v1_int8.onnx" if self.int8 else None

    def _decode(self, outs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes = decode_ssd(outs["box_encodings"][0], outs["priors"]) * self.net_side
        return boxes, np.asarray(outs["scores"][0], dtype=np.float64), None
