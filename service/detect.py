"""Face detection (pluggable) and the calibration of a detector's boxes to the crop rule.

A detector returns boxes in the pixel convention of model_store.geometry (continuous
coordinates, origin at the top-left corner of the top-left pixel). Its boxes are not the tight
landmark boxes the crop rule was trained on; each model's manifest carries a
``box_calibrations[detector.name]`` fitted by :func:`fit_box_calibration`.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from model_store.geometry import BoxCalibration, tight_box

__all__ = [
    "DETECTORS",
    "Detections",
    "Detector",
    "DlibHogDetector",
    "box_iou",
    "create_detector",
    "fit_box_calibration",
]


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [N, 4] float64 x1, y1, x2, y2 in the pixels of the image given to detect()
    scores: np.ndarray  # [N] float64, highest first


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        """[H, W, 3] uint8 RGB -> faces, best first. Must be safe to call from several threads.

        ``min_face``: the smallest face to keep, in the pixels of ``image`` (None: the detector's own).
        """
        ...


class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector (the model ships inside the dlib wheel).

    Where detection runs, and why:

    - dlib's sliding window is 80x80 pixels (:attr:`window`): at ``upsample=0`` it finds faces of
      about 80 px and up in the array it is given, and none smaller.
    - Large images (long side over ``max_side``) are detected on a downscaled copy, but never
      shrunk by more than ``min_face / window``: a face of ``min_face`` pixels in the image still
      covers the window after the shrink. With the default ``min_face=80`` no image is shrunk (a
      greyscale 817x1024 portrait with an 86-px face is found); raising ``min_face`` trades small
      faces for speed on large images.
    - When nothing is found in a small image (long side at most ``retry_max_side``) and
      ``upsample`` is 0, detection is run once more upsampled 2x (faces down to about 40 px, at
      about 4x the cost).

    Boxes are mapped back to the pixels of the array given to :meth:`detect`. dlib objects are
    not shared between threads: a pool of ``instances`` detectors is built up front (loading one
    takes a few hundred ms) and each call borrows one.
    """

    name = "dlib_hog"
    window = 80  # px: the side of dlib's frontal detector window, the smallest face it finds unscaled

    def __init__(
        self,
        *,
        max_side: int = 640,
        min_face: float = 80.0,
        upsample: int = 0,
        retry_max_side: int = 800,
        threshold: float = 0.0,
        instances: int = 1,
    ) -> None:
        import dlib  # imported here so that importing this module costs nothing

        if min_face <= 0:
            raise ValueError(f"min_face must be positive, got {min_face}")
        self.max_side = max_side
        self.min_face = float(min_face)
        self.upsample = upsample
        self.retry_max_side = retry_max_side
        self.threshold = threshold
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(max(1, instances)):
            self._free.put(dlib.get_frontal_face_detector())

    def working_scale(self, width: int, height: int, min_face: float | None = None) -> float:
        """The factor (>= 1) by which an image of this size is shrunk before detection.

        ``min_face`` (default: the detector's) is the smallest face to keep, in this image's pixels.
        """
        long_side = max(width, height)
        if long_side <= self.max_side:
            return 1.0
        smallest = self.min_face if min_face is None else float(min_face)
        return max(1.0, min(long_side / self.max_side, smallest / self.window))

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        """[H, W, 3] uint8 RGB -> faces, best first (see the class docstring for the working size).

        ``min_face`` overrides the detector's smallest face to keep, in the pixels of ``image`` (the
        service passes it when a JPEG was decoded reduced).
        """
        img = np.asarray(image)
        h, w = img.shape[:2]
        scale = self.working_scale(w, h, min_face)
        if scale > 1.0:
            img = _resize(img, max(1, round(w / scale)), max(1, round(h / scale)))
        img = np.ascontiguousarray(img)
        sx, sy = w / img.shape[1], h / img.shape[0]
        smallest = (self.min_face if min_face is None else float(min_face)) / scale  # in working pixels
        upsample = self.upsample
        if upsample == 0 and smallest < self.window and max(img.shape[:2]) <= self.retry_max_side:
            upsample = 1  # the faces asked for are smaller than the window: look upsampled at once
        rects, scores = self._run(img, upsample)
        if not rects and upsample == 0 and max(img.shape[:2]) <= self.retry_max_side:
            rects, scores = self._run(img, 1)  # a small image with no face found: look again, upsampled
        if not rects:
            return Detections(np.zeros((0, 4)), np.zeros((0,)))
        # dlib rectangles are inclusive pixel indices: left..right covers [left, right + 1) in our convention.
        boxes = np.array(
            [[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], dtype=np.float64
        )
        boxes *= np.array([sx, sy, sx, sy])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        score = np.asarray(scores, dtype=np.float64)
        order = np.argsort(-score, kind="stable")
        keep = [i for i in order if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
        return Detections(boxes[keep], score[keep])

    def _run(self, img: np.ndarray, upsample: int) -> tuple[list[Any], list[float]]:
        detector = self._free.get()
        try:
            rects, scores, _ = detector.run(img, upsample, self.threshold)
        finally:
            self._free.put(detector)
        return list(rects), list(scores)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


DETECTORS = {"dlib_hog": DlibHogDetector}


def create_detector(kind: str, **options: Any) -> Detector | None:
    """``dlib_hog`` -> a DlibHogDetector; ``none`` -> None (requests must then send boxes)."""
    if kind == "none":
        return None
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector {kind!r}; known: {[*DETECTORS, 'none']}")
    detector: Detector = DETECTORS[kind](**options)
    return detector


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [N, 4] and b [M, 4] -> [N, M]."""
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


def fit_box_calibration(
    detector: Detector,
    images: Iterable[np.ndarray],
    points: Iterable[np.ndarray] | Sequence[np.ndarray],
    *,
    min_iou: float = 0.3,
    min_faces: int = 1,
    report: dict[str, Any] | None = None,
) -> BoxCalibration:
    """Fit the map from ``detector``'s boxes to tight landmark boxes.

    Args:
        detector: any Detector.
        images: [H, W, 3] uint8 RGB images.
        points: per image, [K, 2] or [F, K, 2] ground-truth landmarks (image pixels).
        min_iou: a detection counts for a face when its IoU with the face's tight box is at least this.
        min_faces: raise ValueError when fewer faces are matched.
        report: if given, filled with ``faces`` (labelled), ``matched`` and ``images``.
    Returns:
        BoxCalibration with the median offsets (dx, dy: tight centre minus detector centre, in
        detector box widths/heights) and scales (sw, sh: tight size / detector size) over the faces
        the detector found.
    """
    dx: list[float] = []
    dy: list[float] = []
    sw: list[float] = []
    sh: list[float] = []
    n_images = n_faces = 0
    for image, pts in zip(images, points, strict=True):
        faces = np.asarray(pts, dtype=np.float64)
        if faces.ndim == 2:
            faces = faces[None]
        n_images += 1
        n_faces += len(faces)
        tight = tight_box(faces)  # [F, 4]
        dets = detector.detect(image).boxes
        if len(dets) == 0:
            continue
        iou = box_iou(tight, dets)  # [F, D]
        used: set[int] = set()
        for f in np.argsort(-iou.max(axis=1)):
            d = int(np.argmax(iou[f]))
            if iou[f, d] < min_iou or d in used:
                continue
            used.add(d)
            t, b = tight[f], dets[d]
            bw, bh = b[2] - b[0], b[3] - b[1]
            dx.append(((t[0] + t[2]) / 2 - (b[0] + b[2]) / 2) / bw)
            dy.append(((t[1] + t[3]) / 2 - (b[1] + b[3]) / 2) / bh)
            sw.append((t[2] - t[0]) / bw)
            sh.append((t[3] - t[1]) / bh)
    if report is not None:
        report.update(images=n_images, faces=n_faces, matched=len(dx))
    if len(dx) < max(1, min_faces):
        raise ValueError(f"the detector matched {len(dx)} faces; at least {max(1, min_faces)} needed")
    return BoxCalibration(
        dx=float(np.median(dx)), dy=float(np.median(dy)), sw=float(np.median(sw)), sh=float(np.median(sh))
    )
