"""Landmark schemes: point names, horizontal-flip permutation and NME normaliser.

A scheme is declared once here and passed around by name. Nothing in wingmark infers a
scheme from the number of points in an array.

Sources: the iBUG 68-point mark-up (Sagonas et al., 300-W, 2013; 0-based indices as in
DESIGN.md) and the 19-point AFLW-Full protocol (Zhu et al., CVPR 2016: AFLW's 21 points
without the two ears).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["AFLW19", "IBUG68", "SCHEMES", "Scheme", "get_scheme"]

Normaliser = Literal["inter_ocular", "box_size"]


@dataclass(frozen=True)
class Scheme:
    """A landmark layout.

    ``names[i]`` names point ``i``; "right"/"left" are the subject's sides, so in a frontal
    photo the subject's right eye appears on the image's left. ``flip_pairs`` lists the
    points that swap under a horizontal flip; every other point maps to itself.
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    normaliser: Normaliser
    normaliser_indices: tuple[int, int] | None
    right_eye: tuple[int, ...]
    left_eye: tuple[int, ...]
    _perm: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = len(self.names)
        perm = np.arange(k)
        for a, b in self.flip_pairs:
            if perm[a] != a or perm[b] != b:
                raise ValueError(f"{self.name}: point {a} or {b} appears in two flip pairs")
            perm[a], perm[b] = b, a
        perm.setflags(write=False)
        object.__setattr__(self, "_perm", perm)
        if self.normaliser == "inter_ocular" and self.normaliser_indices is None:
            raise ValueError(f"{self.name}: inter-ocular normaliser needs two point indices")

    @property
    def num_points(self) -> int:
        return len(self.names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """[K] int: after a horizontal flip, new point i is old point ``perm[i]``."""
        return self._perm

    def normaliser_distance(self, points: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        """Per-face NME normaliser.

        Args:
            points: [N, K, 2] ground-truth landmarks (pixels).
            boxes: [N, 4] face boxes x1, y1, x2, y2; needed by ``box_size`` schemes.
        Returns:
            [N] distances in pixels: ||p[a] - p[b]|| for ``inter_ocular`` (outer eye corners),
            sqrt(w * h) of the box for ``box_size``.
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 3 or pts.shape[1:] != (self.num_points, 2):
            raise ValueError(f"{self.name}: expected points [N, {self.num_points}, 2], got {pts.shape}")
        if self.normaliser == "inter_ocular":
            assert self.normaliser_indices is not None
            a, b = self.normaliser_indices
            return np.asarray(np.linalg.norm(pts[:, a] - pts[:, b], axis=-1))
        if boxes is None:
            raise ValueError(f"{self.name}: the box_size normaliser needs the face boxes")
        bx = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w = bx[:, 2] - bx[:, 0]
        h = bx[:, 3] - bx[:, 1]
        return np.asarray(np.sqrt(np.clip(w * h, 0.0, None)))


def _ibug68_names() -> tuple[str, ...]:
    names: list[str] = [""] * 68
    for i in range(8):  # jaw: 0-7 the subject's right side, 8 the chin, 9-16 mirror
        names[i] = f"right_jaw_{i}"
        names[16 - i] = f"left_jaw_{i}"
    names[8] = "chin"
    for i in range(5):  # brows, outer (0) to inner (4)
        names[17 + i] = f"right_brow_{i}"
        names[26 - i] = f"left_brow_{i}"
    for i in range(4):
        names[27 + i] = f"nose_bridge_{i}"
    names[31:36] = ["right_nose_wing", "right_nostril", "nose_base", "left_nostril", "left_nose_wing"]
    names[36:42] = [
        "right_eye_outer", "right_eye_upper_outer", "right_eye_upper_inner",
        "right_eye_inner", "right_eye_lower_inner", "right_eye_lower_outer",
    ]  # fmt: skip
    names[42:48] = [
        "left_eye_inner", "left_eye_upper_inner", "left_eye_upper_outer",
        "left_eye_outer", "left_eye_lower_outer", "left_eye_lower_inner",
    ]  # fmt: skip
    names[48:60] = [
        "right_mouth_corner", "right_upper_lip_outer", "right_upper_lip_peak", "upper_lip_top",
        "left_upper_lip_peak", "left_upper_lip_outer", "left_mouth_corner", "left_lower_lip_outer",
        "left_lower_lip_inner", "lower_lip_bottom", "right_lower_lip_inner", "right_lower_lip_outer",
    ]  # fmt: skip
    names[60:68] = [
        "right_inner_mouth_corner", "right_upper_inner_lip", "upper_inner_lip_centre",
        "left_upper_inner_lip", "left_inner_mouth_corner", "left_lower_inner_lip",
        "lower_inner_lip_centre", "right_lower_inner_lip",
    ]  # fmt: skip
    return tuple(names)


# Flip pairs of the iBUG 68-point mark-up (0-based).
_IBUG68_FLIP: tuple[tuple[int, int], ...] = (
    *((i, 16 - i) for i in range(8)),  # jaw
    *((17 + i, 26 - i) for i in range(5)),  # brows
    (31, 35), (32, 34),  # lower nose
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),  # outer mouth
    (60, 64), (61, 63), (65, 67),  # inner mouth
)  # fmt: skip

IBUG68 = Scheme(
    name="ibug68",
    names=_ibug68_names(),
    flip_pairs=_IBUG68_FLIP,
    normaliser="inter_ocular",
    normaliser_indices=(36, 45),  # outer eye corners, as in 300-W's inter-ocular NME
    right_eye=tuple(range(36, 42)),
    left_eye=tuple(range(42, 48)),
)

AFLW19 = Scheme(
    name="aflw19",
    names=(
        "right_brow_outer",
        "right_brow_centre",
        "right_brow_inner",
        "left_brow_inner",
        "left_brow_centre",
        "left_brow_outer",
        "right_eye_outer",
        "right_eye_centre",
        "right_eye_inner",
        "left_eye_inner",
        "left_eye_centre",
        "left_eye_outer",
        "right_nose",
        "nose_tip",
        "left_nose",
        "right_mouth_corner",
        "mouth_centre",
        "left_mouth_corner",
        "chin",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 14), (15, 17)),
    normaliser="box_size",  # AFLW-Full: sqrt(w * h) of the face box
    normaliser_indices=None,
    right_eye=(6, 7, 8),
    left_eye=(9, 10, 11),
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (IBUG68, AFLW19)}


def get_scheme(name: str) -> Scheme:
    """The scheme called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown landmark scheme {name!r}; known: {sorted(SCHEMES)}") from None
