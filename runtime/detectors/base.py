"""What every face detector shares: the result type, the protocol, box IoU and dlib rectangles.

Boxes follow model_store.geometry's pixel convention: continuous corner coordinates
``x1, y1, x2, y2`` with the origin at the top-left corner of the top-left pixel, so a box
covering pixel columns 3..5 is ``[3, ., 6, .]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Detections",
    "Detector",
    "box_from_dlib_rect",
    "box_iou",
    "dlib_rect_from_box",
    "eye_roll",
    "points_from_dlib_shape",
]


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [N, 4] float64 x1, y1, x2, y2 in the pixels of the image given to detect()
    scores: np.ndarray  # [N] float64, highest first
    keypoints: np.ndarray | None = (
        None  # [N, P, 2] float64 image pixels (detectors that find some), else None
    )


class Detector(Protocol):
    """What a face detector is. The registered ones also have ``decode_reduction(width, height,
    min_face) -> int``: the largest JPEG reduction (1, 2, 4 or 8) of an image that size at which they
    still find faces of ``min_face`` px (of that size) as at full size (``runtime.Landmarker``
    decodes for detection at it; a detector without it gets full-size images)."""

    name: str

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        """[H, W, 3] uint8 RGB -> faces, best first. Must be safe to call from several threads.

        ``min_face``: the smallest face to keep, in the pixels of ``image`` (None: the detector's own).
        """
        ...


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [N, 4] and b [M, 4] -> [N, M] (0 where the union is empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0))


def box_from_dlib_rect(rect: Any) -> list[float]:
    """A dlib rectangle -> ``[x1, y1, x2, y2]`` corner coordinates.

    dlib rectangles hold inclusive pixel indices: ``left..right`` covers ``[left, right + 1)`` in
    our convention, hence the ``+ 1`` on the far corner (and the ``- 1`` in :func:`dlib_rect_from_box`).
    """
    return [float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)]


def dlib_rect_from_box(box: np.ndarray | list[float]) -> Any:
    """``[x1, y1, x2, y2]`` corner coordinates -> the dlib rectangle of the pixels it covers (rounded)."""
    import dlib

    x1, y1, x2, y2 = (int(v) for v in np.rint(np.asarray(box, dtype=np.float64)[:4]))
    return dlib.rectangle(x1, y1, x2 - 1, y2 - 1)


def points_from_dlib_shape(shape: Any) -> np.ndarray:
    """A dlib ``full_object_detection`` (a shape predictor's answer) -> its points ``[K, 2]`` float64.

    dlib gives each point as the index of its pixel; our coordinates put that pixel's centre at
    ``index + 0.5``."""
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64).reshape(-1, 2)


def eye_roll(keypoints: np.ndarray) -> np.ndarray:
    """[N, P, 2] detector keypoints whose first two are the eyes (the one on the image's left first,
    as BlazeFace and MTCNN give them) -> [N] roll angles, radians: atan2 of the eye line, 0 for an
    upright face (the sense of ``model_store.geometry.eye_angle``)."""
    k = np.asarray(keypoints, dtype=np.float64)
    d = k[:, 1] - k[:, 0]
    return np.arctan2(d[:, 1], d[:, 0])
