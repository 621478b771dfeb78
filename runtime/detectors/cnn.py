"""What the ONNX CNN detectors share: their files, sessions, views of the image, and NMS.

A CNN detector sees the image through square *views*: a view is a square region of the image
(``x0, y0, side`` in image pixels; it may reach past the right and bottom edges, which are padded
with black, as face-api pads its input) resized to the net's input. Which views:

- the whole image (side = its long side): finds faces from about ``smallest * long_side / net``
  pixels up, where ``smallest`` is the smallest face (px of the net's input) the net finds reliably;
- *context* views, looked at only when the other views found no face (as dlib's detector looks
  again upsampled): the image centred in a black square 1.6 and 2.6 times its long side (one view
  of 2 times for images over ``context_max_side`` px). The nets were trained on faces with some
  scene around them and miss most faces that fill the frame (150x150 passport-style crops: SSD finds
  62 of 102 faces from the whole view alone, 94 from a 2x context view);
- when the caller asks for smaller faces (``min_face``) than the whole-image view finds, levels of
  overlapping tiles, the finest of side ``min_face * net / smallest``, each next level twice as
  large (see :func:`plan_views`).

Detections of all views are mapped back to image pixels and merged by non-maximum suppression.
The ONNX files live in ``model_store/detectors/<name>/`` (``$WINGMARK_DETECTOR_DIR`` overrides the
folder); ``wingmark data detectors`` writes them. Nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import BoxCalibration
from runtime.decode import largest_reduction
from runtime.detectors.base import Detections, box_iou

CALIBRATION_FILE = "calibration.json"

__all__ = [
    "CnnDetector",
    "View",
    "detector_dir",
    "nms",
    "own_calibrations",
    "plan_views",
    "scheme_calibration",
    "sigmoid",
    "view_input",
]


def detector_dir() -> Path:
    """``$WINGMARK_DETECTOR_DIR`` or the repository's ``model_store/detectors``."""
    env = os.environ.get("WINGMARK_DETECTOR_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "model_store" / "detectors"


def own_calibrations(folder: Path, name: str) -> dict[str, Any]:
    """Detector ``name``'s own box calibrations per scheme: ``<folder>/<name>/calibration.json``
    (written by ``wingmark data detect-bench --write-calibration``), {} where there is none."""
    cal = folder / name / CALIBRATION_FILE
    return dict(json.loads(cal.read_text())["schemes"]) if cal.is_file() else {}


def scheme_calibration(calibrations: dict[str, Any], scheme: str) -> BoxCalibration | None:
    """One scheme's entry of :func:`own_calibrations` as a BoxCalibration, or None."""
    entry = calibrations.get(scheme)
    if entry is None:
        return None
    return BoxCalibration(**{k: float(entry[k]) for k in ("dx", "dy", "sw", "sh")})


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression -> indices kept, highest score first.

    boxes [N, 4] x1, y1, x2, y2; scores [N]. A box is dropped when its IoU with a kept, higher-scoring
    box is above ``iou_threshold`` (ties in score: the earlier box wins).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        iou = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class View:
    """A square region of the image: ``[x0, x0 + side) x [y0, y0 + side)`` in image pixels."""

    x0: float
    y0: float
    side: float
    tile: bool = False  # a tile: faces cut by its edges inside the image are dropped (another tile has them)
    context: bool = False  # a context view: looked at only when the other views found no face


def context_views(width: int, height: int, factors: Sequence[float]) -> list[View]:
    """The image centred in squares of ``factor`` x its long side (factors > 1)."""
    long_side = float(max(width, height))
    return [
        View((width - f * long_side) / 2, (height - f * long_side) / 2, f * long_side, context=True)
        for f in factors
    ]


def plan_views(
    width: int,
    height: int,
    *,
    smallest_in_view: float,
    min_face: float | None,
    context: Sequence[float] = (),
) -> list[View]:
    """The whole image, the context views, and levels of overlapping tiles where ``min_face`` is
    smaller than the whole view finds.

    ``smallest_in_view`` (r): the smallest face a view finds, as a fraction of the view's side. The
    finest tiles have side ``min_face / r``; each coarser level doubles the side, up to the whole
    view. Tiles of one level overlap by the smallest face the next level finds (at most half a
    tile), so every face between ``min_face`` and the whole view's smallest lies wholly inside a
    tile of a level that finds it.
    """
    long_side = float(max(width, height))
    views = [View(0.0, 0.0, long_side)]
    r = smallest_in_view
    if min_face is None or min_face >= r * long_side:
        return [*views, *context_views(width, height, context)]
    side = min_face / r
    while side < long_side:
        coarser = 2 * side if 2 * side < long_side else long_side
        step = side - min(side / 2, r * coarser)
        for y0 in _starts(height, side, step):
            for x0 in _starts(width, side, step):
                views.append(View(x0, y0, side, tile=True))
        side *= 2
    return [*views, *context_views(width, height, context)]


def _starts(length: int, side: float, step: float) -> list[float]:
    if side >= length:
        return [0.0]
    n = math.ceil((length - side) / step) + 1
    return [float(v) for v in np.linspace(0.0, length - side, n)]


def view_input(image: np.ndarray, view: View, net_side: int) -> np.ndarray:
    """The view's pixels resized to ``net_side`` -> [1, net_side, net_side, 3] float32 (RGB, 0..255).

    The part of the view outside the image is black.
    """
    from PIL import Image

    h, w = image.shape[:2]
    scale = net_side / view.side
    out = np.zeros((1, net_side, net_side, 3), np.float32)
    # the image pixels inside the view, and where they land in the net input
    x0, y0 = max(0, round(view.x0)), max(0, round(view.y0))
    x1, y1 = min(w, round(view.x0 + view.side)), min(h, round(view.y0 + view.side))
    if x1 <= x0 or y1 <= y0:
        return out
    # (a view starting between pixels may round to -1: clamp to the net input)
    px = min(net_side - 1, max(0, round((x0 - view.x0) * scale)))
    py = min(net_side - 1, max(0, round((y0 - view.y0) * scale)))
    cw = max(1, min(net_side - px, round((x1 - x0) * scale)))
    ch = max(1, min(net_side - py, round((y1 - y0) * scale)))
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    resized = Image.fromarray(crop).resize((cw, ch), Image.Resampling.BILINEAR)
    out[0, py : py + ch, px : px + cw] = np.asarray(resized, dtype=np.float32)
    return out


class CnnDetector:
    """Base of the ONNX CNN detectors: views, one session per file, NMS across views.

    Subclasses set ``name``, ``net_side``, ``smallest`` (px of the net's input) and implement
    :meth:`_decode` (net outputs -> boxes [N, 4] in net-input pixels, scores [N], keypoints or None).

    Args:
        min_face: smallest face to keep, px of the image (None: whatever the whole-image view finds;
            faces under that size are looked for with tiles, see :func:`plan_views`).
        score_threshold: detections scoring below are dropped (each detector documents its default).
        nms_iou: NMS IoU threshold, within and across views.
        threads: ONNX Runtime intra-op threads of the session.
        model_dir: folder holding ``<name>/<name>.onnx`` (default :func:`detector_dir`).
        context: the context views' factors for images up to ``context_max_side`` (long side, px);
            larger images get ``large_context``. ``()`` switches them off.
        tiles: False: never tiles, whatever ``min_face`` (faces smaller than the whole view finds are
            not looked for; ``min_face`` still drops smaller detections).
        instances: accepted for the service's option set (ONNX Runtime sessions are thread-safe).
    """

    name = "cnn"
    net_side = 512
    smallest = 24.0  # px of the net input: the smallest face it finds reliably
    default_score_threshold = 0.5
    default_nms_iou = 0.4

    def __init__(
        self,
        *,
        min_face: float | None = None,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        threads: int = 1,
        model_dir: Path | str | None = None,
        context: Sequence[float] = (1.6, 2.6),
        large_context: Sequence[float] = (2.0,),
        context_max_side: int = 1024,
        tiles: bool = True,
        **_service_options: Any,
    ) -> None:
        import onnxruntime as ort

        if min_face is not None and min_face <= 0:
            raise ValueError(f"min_face must be positive, got {min_face}")
        self.min_face = min_face
        self.score_threshold = self.default_score_threshold if score_threshold is None else score_threshold
        self.nms_iou = self.default_nms_iou if nms_iou is None else nms_iou
        if any(f <= 1 for f in (*context, *large_context)):
            raise ValueError("context factors must be > 1")
        self.context = tuple(context)
        self.large_context = tuple(large_context)
        self.context_max_side = context_max_side
        self.tiles = tiles
        folder = Path(model_dir) if model_dir is not None else detector_dir()
        path = folder / self.name / (self._onnx_file() or f"{self.name}.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run 'wingmark data detectors'")
        source = folder / self.name / "source.json"
        self.source: dict[str, Any] = json.loads(source.read_text()) if source.is_file() else {}
        self.calibrations: dict[str, Any] = own_calibrations(folder, self.name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _onnx_file(self) -> str | None:
        """The ONNX file's name in the detector's folder (None: ``<name>.onnx``); subclasses with variants."""
        return None

    def calibration(self, scheme: str) -> BoxCalibration | None:
        """This detector's own box calibration for ``scheme`` (``calibration.json`` beside the ONNX file,
        written by ``wingmark data detect-bench --write-calibration``), or None. A model's manifest
        calibration for this detector takes precedence (the service asks this only when it has none)."""
        return scheme_calibration(self.calibrations, scheme)

    def views(self, width: int, height: int, min_face: float | None = None) -> list[View]:
        """The views :meth:`detect` runs the net on for an image of this size."""
        smallest = self.min_face if min_face is None else float(min_face)
        if not self.tiles:  # the whole view (and the context views) only
            smallest = None
        context = self.context if max(width, height) <= self.context_max_side else self.large_context
        return plan_views(
            width, height, smallest_in_view=self.smallest / self.net_side, min_face=smallest, context=context
        )

    def decode_reduction(self, width: int, height: int, min_face: float | None = None) -> int:
        """The largest JPEG reduction at which each view (whole image or tile; the context views are
        larger) still holds at least as many pixels as the net's input: the net sees the same pixels."""
        sides = [v.side for v in self.views(width, height, min_face) if not v.context]
        return largest_reduction(min(sides) / self.net_side)

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        """[H, W, 3] uint8 RGB -> faces, best first, boxes (and keypoints) in image pixels."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] RGB image, got shape {img.shape}")
        h, w = img.shape[:2]
        all_boxes: list[np.ndarray] = []
        all_scores: list[np.ndarray] = []
        all_kps: list[np.ndarray] = []
        for view in self.views(w, h, min_face):
            if view.context and all_boxes:  # a face was found: no face fills the frame
                break
            boxes, scores, kps = self.look(img, view)
            if not len(scores):
                continue
            all_boxes.append(boxes)
            all_scores.append(scores)
            if kps is not None:
                all_kps.append(kps)
        if not all_boxes:
            return Detections(np.zeros((0, 4)), np.zeros((0,)), None)
        boxes = np.concatenate(all_boxes).astype(np.float64)
        scores = np.concatenate(all_scores).astype(np.float64)
        kps_all = np.concatenate(all_kps).astype(np.float64) if all_kps else None
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        valid = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        idx = np.nonzero(valid)[0]
        keep_idx = idx[nms(boxes[idx], scores[idx], self.nms_iou)]
        limit = self.min_face if min_face is None else min_face
        if limit is not None:  # faces smaller than asked for are dropped (the tiles may find some)
            side = np.sqrt(
                (boxes[keep_idx, 2] - boxes[keep_idx, 0]) * (boxes[keep_idx, 3] - boxes[keep_idx, 1])
            )
            keep_idx = keep_idx[side >= 0.5 * float(limit)]
        return Detections(boxes[keep_idx], scores[keep_idx], None if kps_all is None else kps_all[keep_idx])

    def look(self, image: np.ndarray, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The net on one view -> its detections at or above the score threshold, in image pixels:
        boxes [N, 4] (not clipped), scores [N], keypoints [N, P, 2] or None. A tile drops the boxes
        that reach one of its edges inside the image (a cut face: a neighbouring tile has it whole)."""
        h, w = image.shape[:2]
        x = view_input(image, view, self.net_side)
        outs = dict(zip(self._outputs, self._session.run(None, {"image": x}), strict=True))
        boxes, scores, kps = self._decode(outs)
        keep = scores >= self.score_threshold
        if view.tile:
            margin = 0.01 * self.net_side
            lo_x, lo_y = view.x0 > 0, view.y0 > 0
            hi_x, hi_y = view.x0 + view.side < w, view.y0 + view.side < h
            keep &= ~(lo_x & (boxes[:, 0] < margin)) & ~(lo_y & (boxes[:, 1] < margin))
            keep &= ~(hi_x & (boxes[:, 2] > self.net_side - margin))
            keep &= ~(hi_y & (boxes[:, 3] > self.net_side - margin))
        s = view.side / self.net_side
        offset = np.array([view.x0, view.y0])
        out_kps = None if kps is None else kps[keep] * s + offset
        return boxes[keep] * s + np.tile(offset, 2), scores[keep], out_kps

    def _decode(self, outs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        raise NotImplementedError


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64))))
