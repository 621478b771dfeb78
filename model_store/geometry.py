"""Crop geometry shared by training and serving (numpy only).

Pixel convention
----------------
Continuous image coordinates with the origin at the top-left *corner* of the top-left
pixel, x to the right, y down. Pixel (row i, column j) covers [j, j+1) x [i, i+1) and has
its centre at (x, y) = (j + 0.5, i + 0.5). Landmarks, boxes and crops all use it, so a
point maps between image and crop through one 2x3 similarity ``M`` (image -> crop) and its
exact inverse, with no half-pixel fix-ups anywhere else.

A crop of size S covers [0, S) x [0, S) in crop coordinates; crop pixel (u, v) takes the
image's value at ``invert_affine(M) @ (u + 0.5, v + 0.5)`` (bilinear, zero outside).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from model_store.schemes import Scheme

__all__ = [
    "BoxCalibration",
    "CropRule",
    "apply_affine",
    "crop_matrix_from_box",
    "crop_matrix_from_points",
    "eye_angle",
    "face_size",
    "flip_box",
    "flip_points",
    "invert_affine",
    "roll_angle",
    "similarity",
    "tight_box",
    "warp_affine",
]


@dataclass(frozen=True)
class CropRule:
    """How a tight face box becomes a square crop.

    side = scale * max(w, h); centre = box centre + (shift_x, shift_y) * max(w, h).

    ``roll`` says how a later cascade stage estimates the in-plane rotation it removes from the
    previous stage's points (see :func:`roll_angle`): ``"eyes"`` (the eye line; the 1.0.0 models'
    rule and the default) or ``"blend"`` (eye line blended into the brow-to-chin axis as the eyes
    close up in profile). Stage-1 (face-box) crops ignore it.
    """

    scale: float = 1.25
    shift_x: float = 0.0
    shift_y: float = 0.0
    roll: str = "eyes"

    def __post_init__(self) -> None:
        if self.roll not in ROLL_RULES:
            raise ValueError(f"crop rule roll must be one of {ROLL_RULES}, got {self.roll!r}")

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CropRule:
        """From :meth:`to_dict` output (numbers as float; ``roll`` default "eyes")."""
        return cls(
            scale=float(d.get("scale", 1.25)),
            shift_x=float(d.get("shift_x", 0.0)),
            shift_y=float(d.get("shift_y", 0.0)),
            roll=str(d.get("roll", "eyes")),
        )


ROLL_RULES = ("eyes", "blend")
# "blend": the eye line's weight falls linearly from 1 to 0 as the inter-ocular distance falls from
# _BLEND_HI to _BLEND_LO times the brow-to-chin distance (frontal synthetic faces: about 0.45-0.55;
# |yaw| 60 deg: about 0.25; profile: under 0.1)
_BLEND_LO = 0.15
_BLEND_HI = 0.35


@dataclass(frozen=True)
class BoxCalibration:
    """Maps a face detector's box to the tight landmark box the crop rule expects.

    cx += dx * w, cy += dy * h, w *= sw, h *= sh (w, h of the detector box).
    """

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] or [4] detector boxes -> same shape, calibrated (float64)."""
        b = np.asarray(boxes, dtype=np.float64)
        w = b[..., 2] - b[..., 0]
        h = b[..., 3] - b[..., 1]
        cx = (b[..., 0] + b[..., 2]) / 2 + self.dx * w
        cy = (b[..., 1] + b[..., 3]) / 2 + self.dy * h
        hw, hh = self.sw * w / 2, self.sh * h / 2
        return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=-1)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def similarity(centre: tuple[float, float], side: float, size: int, angle: float = 0.0) -> np.ndarray:
    """[2, 3] image -> crop similarity.

    The square of side ``side`` centred at ``centre`` and rotated by ``angle`` radians
    (counter-clockwise in the image as displayed, i.e. y down) maps onto [0, size)^2, with
    the rotation removed.
    """
    if side <= 0 or not math.isfinite(side):
        raise ValueError(f"crop side must be positive and finite, got {side}")
    s = size / side
    c, n = math.cos(angle), math.sin(angle)
    # crop = s * R(angle) @ (p - centre) + size / 2; with y down, R(angle) = [[c, -n], [n, c]] removes a
    # tilt of `angle` measured as atan2(dy, dx) of the eye line.
    rot = np.array([[c, n], [-n, c]]) * s
    cx, cy = centre
    t = np.array([size / 2, size / 2]) - rot @ np.array([cx, cy])
    return np.concatenate([rot, t[:, None]], axis=1)


def crop_matrix_from_box(box: np.ndarray, size: int, rule: CropRule, angle: float = 0.0) -> np.ndarray:
    """[4] tight face box x1, y1, x2, y2 -> [2, 3] image -> crop similarity (see ``CropRule``)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"degenerate face box {[x1, y1, x2, y2]}")
    ref = max(x2 - x1, y2 - y1)
    centre = ((x1 + x2) / 2 + rule.shift_x * ref, (y1 + y2) / 2 + rule.shift_y * ref)
    return similarity(centre, rule.scale * ref, size, angle)


def eye_angle(points: np.ndarray, scheme: Scheme) -> float:
    """Tilt of the line from the right-eye centre to the left-eye centre, radians (atan2(dy, dx))."""
    right, left = _eye_centres(np.asarray(points, dtype=np.float64), scheme)
    d = left - right
    return float(math.atan2(d[1], d[0]))


@functools.cache
def _indices(scheme: Scheme) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The right-eye, left-eye, brow and chin points of a scheme as index arrays (brows and chin by
    name; None where the scheme names none). Worked out once per scheme: the cascade asks per face."""
    brows = [i for i, n in enumerate(scheme.names) if "brow" in n]
    chin = [i for i, n in enumerate(scheme.names) if n == "chin"]

    def frozen(idx: Sequence[int]) -> np.ndarray:
        arr = np.array(idx, dtype=np.intp)
        arr.setflags(write=False)
        return arr

    return (
        frozen(scheme.right_eye),
        frozen(scheme.left_eye),
        frozen(brows) if brows else None,
        frozen(chin) if chin else None,
    )


def _eye_centres(pts: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    right, left, _, _ = _indices(scheme)
    return pts[right].mean(axis=0), pts[left].mean(axis=0)


def _axis_indices(scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Brow points and chin point(s) of a scheme, by name (both schemes name them)."""
    _, _, brows, chin = _indices(scheme)
    if brows is None or chin is None:
        raise ValueError(f"{scheme.name}: no brow / chin points for the brow-to-chin axis")
    return brows, chin


def roll_angle(points: np.ndarray, scheme: Scheme, rule: str = "eyes") -> float:
    """In-plane rotation of a face from its landmarks, radians (0 = upright, atan2(dy, dx) sense).

    ``"eyes"``: :func:`eye_angle`. ``"blend"``: the eye line and the brow-to-chin axis (turned by
    90 degrees, so both read 0 on an upright face) averaged as unit vectors, the eye line weighted
    by how far apart the eyes are relative to the brow-to-chin distance: in profile the two eye
    centres nearly coincide and their line's direction is noise, while brows and chin stay apart.
    """
    pts = np.asarray(points, dtype=np.float64)
    right, left = _eye_centres(pts, scheme)
    eyes = float(math.atan2(left[1] - right[1], left[0] - right[0]))
    if rule == "eyes":
        return eyes
    if rule != "blend":
        raise ValueError(f"unknown roll rule {rule!r}; known: {ROLL_RULES}")
    brows, chin = _axis_indices(scheme)
    down = pts[chin].mean(axis=0) - pts[brows].mean(axis=0)  # brow centre -> chin
    height = float(np.hypot(*down))
    if height < 1e-9:
        return eyes
    axis = math.atan2(-down[0], down[1])  # upright face: down = (0, +h) -> 0
    iod = float(np.hypot(*(left - right)))
    w = min(1.0, max(0.0, (iod / height - _BLEND_LO) / (_BLEND_HI - _BLEND_LO)))
    v = w * np.array([math.cos(eyes), math.sin(eyes)]) + (1 - w) * np.array([math.cos(axis), math.sin(axis)])
    if float(np.hypot(*v)) < 1e-9:  # the two estimates opposite: keep the axis
        return axis
    return float(math.atan2(v[1], v[0]))


def crop_matrix_from_points(points: np.ndarray, scheme: Scheme, size: int, rule: CropRule) -> np.ndarray:
    """Re-aligned crop for a cascade's second stage.

    Args:
        points: [K, 2] landmarks in image pixels (e.g. stage-1 predictions).
    Returns:
        [2, 3] image -> crop similarity: the roll (``rule.roll``, see :func:`roll_angle`; the
        eye line by default) removed, the square from ``rule`` applied to the tight box of the
        de-rotated points.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (scheme.num_points, 2):
        raise ValueError(f"{scheme.name}: expected points [{scheme.num_points}, 2], got {pts.shape}")
    angle = roll_angle(pts, scheme, rule.roll)
    c, n = math.cos(angle), math.sin(angle)
    rot = np.array([[c, n], [-n, c]])
    upright = pts @ rot.T  # de-rotated about the origin
    x1, y1 = upright.min(axis=0)
    x2, y2 = upright.max(axis=0)
    w, h = max(x2 - x1, 1e-6), max(y2 - y1, 1e-6)
    ref = max(w, h)
    centre_up = np.array([(x1 + x2) / 2 + rule.shift_x * ref, (y1 + y2) / 2 + rule.shift_y * ref])
    centre = rot.T @ centre_up  # back to image coordinates
    return similarity((float(centre[0]), float(centre[1])), rule.scale * ref, size, angle)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """[..., 2, 3] -> [..., 2, 3] exact inverse of an invertible 2-D affine map."""
    m = np.asarray(m, dtype=np.float64)
    a = m[..., :2]
    t = m[..., 2:]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -a_inv @ t], axis=-1)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply [2, 3] (or batched [N, 2, 3]) to points [K, 2] (or [N, K, 2]); returns float64."""
    m = np.asarray(m, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.asarray(p @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2])


def tight_box(points: np.ndarray) -> np.ndarray:
    """[..., K, 2] -> [..., 4] the axis-aligned box x1, y1, x2, y2 around the points."""
    p = np.asarray(points, dtype=np.float64)
    return np.concatenate([p.min(axis=-2), p.max(axis=-2)], axis=-1)


def face_size(points: np.ndarray) -> float:
    """``sqrt(w * h)`` of the tight box of one face's points ``[K, 2]`` (each side at least 1e-6)."""
    w, h = np.ptp(np.asarray(points, dtype=np.float64), axis=0)
    return float(np.sqrt(max(w, 1e-6) * max(h, 1e-6)))


def flip_points(points: np.ndarray, image_width: float, scheme: Scheme) -> np.ndarray:
    """Landmarks of the horizontally flipped image: x -> W - x, then the scheme's permutation.

    points: [..., K, 2] -> [..., K, 2].
    """
    p = np.array(points, dtype=np.float64)
    p[..., 0] = image_width - p[..., 0]
    return p[..., scheme.flip_permutation, :]


def flip_box(box: np.ndarray, image_width: float) -> np.ndarray:
    """[..., 4] box of the horizontally flipped image."""
    b = np.asarray(box, dtype=np.float64)
    return np.stack([image_width - b[..., 2], b[..., 1], image_width - b[..., 0], b[..., 3]], axis=-1)


def warp_affine(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Bilinear crop of ``image`` through the image -> crop map ``m``.

    Args:
        image: [H, W, C] (or [H, W]) uint8 or float.
        m: [2, 3] image -> crop similarity.
        size: crop side S.
    Returns:
        [S, S, C] float32 (or [S, S]); samples outside the image are 0.
    """
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    h, w = img.shape[:2]
    inv = invert_affine(m)
    centres = np.arange(size, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres)  # [S, S]: x (column) and y (row) crop coordinates
    # Continuous image coordinates of every crop pixel centre, then to array index space (centre at i).
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2] - 0.5
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2] - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0).astype(np.float32)[..., None]
    fy = (y - y0).astype(np.float32)[..., None]
    # Pad by one zero pixel on every side so that neighbours outside the image read 0.
    padded = np.zeros((h + 2, w + 2, img.shape[2]), dtype=np.float32)
    padded[1:-1, 1:-1] = img
    xi = np.clip(x0 + 1, 0, w + 1)
    yi = np.clip(y0 + 1, 0, h + 1)
    xj = np.clip(x0 + 2, 0, w + 1)
    yj = np.clip(y0 + 2, 0, h + 1)
    top = padded[yi, xi] * (1 - fx) + padded[yi, xj] * fx
    bottom = padded[yj, xi] * (1 - fx) + padded[yj, xj] * fx
    out = top * (1 - fy) + bottom * fy
    # Points that fall wholly outside the padded border (clipped indices) must read 0, not the edge.
    outside = (x0 < -1) | (x0 > w - 1) | (y0 < -1) | (y0 > h - 1)
    out[outside] = 0.0
    return out[:, :, 0] if squeeze else out
