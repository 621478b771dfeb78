"""face-api's tiny face detector (npm ``@vladmandic/face-api`` 1.7.15, MIT), as ONNX.

A Tiny-YOLOv2 with separable convolutions: the net sees a square view (416x416 by default, any side
divisible by 32) and predicts, per cell of its 32-px grid and per anchor (5, in cells), a box and an
objectness logit. Decoded here as face-api does: centre = (cell + sigmoid(t_xy)) / cells, size =
anchor * exp(t_wh) / cells, score = sigmoid(objectness). No keypoints.

Score threshold: 0.5 by default (face-api's ``scoreThreshold`` default); NMS IoU 0.4 as face-api.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.detectors import register_detector
from runtime.detectors.cnn import CnnDetector, sigmoid

__all__ = ["TINY_ANCHORS", "TinyFaceDetector", "decode_yolo"]

TINY_ANCHORS = np.array(
    [
        [1.603231, 2.094468],
        [6.041143, 7.080126],
        [2.882459, 3.518061],
        [4.266906, 5.178857],
        [9.041765, 10.66308],
    ]
)


def decode_yolo(grid: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """grid [rows, cols, A, 5] (tx, ty, tw, th, objectness logit), anchors [A, 2] in cells
    -> boxes [rows * cols * A, 4] x1, y1, x2, y2 in 0..1 of the net input, scores [rows * cols * A].
    """
    g = np.asarray(grid, dtype=np.float64)
    rows, cols = g.shape[:2]
    col = np.arange(cols)[None, :, None]
    row = np.arange(rows)[:, None, None]
    cx = (col + sigmoid(g[..., 0])) / cols
    cy = (row + sigmoid(g[..., 1])) / rows
    w = np.exp(g[..., 2]) * anchors[None, None, :, 0] / cols
    h = np.exp(g[..., 3]) * anchors[None, None, :, 1] / rows
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).reshape(-1, 4)
    return boxes, sigmoid(g[..., 4]).reshape(-1)


@register_detector("tiny_face_detector")
class TinyFaceDetector(CnnDetector):
    name = "tiny_face_detector"
    smallest = 24.0  # px of the net input (see docs/detectors.md: recall by face size)
    default_score_threshold = 0.5
    default_nms_iou = 0.4

    def __init__(self, *, input_size: int = 416, **options: Any) -> None:
        if input_size % 32 or input_size < 64:
            raise ValueError(f"input_size must be a multiple of 32 and >= 64, got {input_size}")
        self.net_side = input_size
        super().__init__(**options)

    def _decode(self, outs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes, scores = decode_yolo(outs["grid"][0], TINY_ANCHORS)
        return boxes * self.net_side, scores, None
