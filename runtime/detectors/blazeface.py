"""MediaPipe's BlazeFace short-range face detector (PyPI ``mediapipe`` 0.10.21, Apache-2.0), as ONNX.

The net sees a 128x128 view (:mod:`runtime.detectors.cnn`) and scores 896 anchors; each carries a
box and six keypoints (right eye, left eye, nose tip, mouth, right ear, left ear: the subject's
right eye is on the image's left). Decoding follows MediaPipe's face_detection_short_range graph:

- anchors (SsdAnchorsCalculator: strides 8, 16, 16, 16; fixed size; offset 0.5): a 16x16 grid with
  2 anchors per cell, then an 8x8 grid with 6 per cell, row by row;
- box centre = anchor + raw / 128, size = raw / 128; keypoints likewise; score = sigmoid(logit),
  logits clipped to +-100 (TensorsToDetectionsCalculator).

Score threshold 0.5 (MediaPipe's ``min_detection_confidence`` default); NMS IoU 0.3 (MediaPipe
blends overlapping boxes, weighted; plain NMS here). A short-range model: faces from about 15 % of
the view's side, so large images are searched with tiles (``smallest`` below).
"""

from __future__ import annotations

import numpy as np

from runtime.detectors import register_detector
from runtime.detectors.cnn import CnnDetector, sigmoid

__all__ = ["BlazeFaceDetector", "blazeface_anchors", "decode_blazeface"]

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


def blazeface_anchors(size: int = 128, strides: tuple[int, ...] = (8, 16, 16, 16)) -> np.ndarray:
    """[N, 2] anchor centres (x, y) in 0..1, in the net's output order (896 for the short-range net)."""
    out: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        n = 0
        j = i
        while j < len(strides) and strides[j] == strides[i]:  # layers of one stride share a grid
            n += 2  # one aspect ratio (1.0) plus the interpolated scale: two anchors per layer
            j += 1
        cells = -(-size // strides[i])
        ys, xs = np.meshgrid(
            (np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij"
        )
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)  # row by row
        out.append(np.repeat(grid, n, axis=0))
        i = j
    return np.concatenate(out)


def decode_blazeface(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, size: int = 128
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """regressors [N, 16], logits [N] or [N, 1], anchors [N, 2] -> boxes [N, 4] x1, y1, x2, y2,
    scores [N], keypoints [N, 6, 2], all in 0..1 of the net input."""
    r = np.asarray(regressors, dtype=np.float64).reshape(len(anchors), -1) / size
    a = np.asarray(anchors, dtype=np.float64)
    cx, cy = a[:, 0] + r[:, 0], a[:, 1] + r[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
    scores = sigmoid(np.clip(np.asarray(logits, dtype=np.float64).reshape(-1), -100.0, 100.0))
    return boxes, scores, kps


@register_detector("blazeface")
class BlazeFaceDetector(CnnDetector):
    name = "blazeface"
    net_side = 128
    smallest = 20.0  # px of the 128 input (see docs/detectors.md: recall by face size)
    default_score_threshold = 0.5
    default_nms_iou = 0.3
    _anchors = blazeface_anchors()

    def _decode(self, outs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        boxes, scores, kps = decode_blazeface(outs["regressors"][0], outs["classificators"][0], self._anchors)
        return boxes * self.net_side, scores, kps * self.net_side
