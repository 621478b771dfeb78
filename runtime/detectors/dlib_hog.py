"""dlib's HOG + linear SVM frontal face detector, registered as ``dlib_hog``."""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from runtime.decode import largest_reduction
from runtime.detectors import register_detector
from runtime.detectors.base import Detections, box_from_dlib_rect

__all__ = ["DlibHogDetector"]


@register_detector("dlib_hog")
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

    def decode_reduction(self, width: int, height: int, min_face: float | None = None) -> int:
        """The largest JPEG reduction no larger than :meth:`working_scale` (the shrink detection does
        anyway): 1 unless ``min_face`` is at least twice the window."""
        return largest_reduction(self.working_scale(width, height, min_face))

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
        boxes = np.array([box_from_dlib_rect(r) for r in rects], dtype=np.float64)
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
