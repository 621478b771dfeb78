"""The calibration of a detector's boxes to the tight landmark boxes the crop rule was trained on.

Every detector's boxes differ from the tight landmark box; each model's manifest carries a
``box_calibrations[detector.name]`` fitted here (train/export/publish.py fits one per registered
detector).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from model_store.geometry import BoxCalibration, tight_box
from runtime.detectors.base import Detector, box_iou

__all__ = ["fit_box_calibration"]


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
