"""Real skin for synthetic heads: a bank of cheek patches cut from the real-face cache.

Each kept face of the cache's **train** split (never the held-out test split) gives up to two
patches, one per cheek: a square between the jaw contour and the side of the nose (iBUG points
3 / 32 and 15 / 36, 1-based), located by the face's 68 teacher points and resampled to ``size`` x
``size``. A patch keeps

- ``colour`` [3]: its mean RGB (0-255), lit as photographed;
- ``detail`` [size, size]: its luminance over a blurred copy of it (a high-pass factor around 1:
  pores, freckles, fine shading), clipped to [0.75, 1.25].

Patches that are not plain skin are dropped: too dark or bright, not skin-coloured (red below blue),
or too much detail (an edge of hair, glasses, a shadow line). The renderer
(:func:`train.data.render.render_face`, ``skin_patch``) then tints its skin towards the patch's
colour and multiplies its skin shading by the tiled detail. The photos come from registry packages
whose rights are mostly unstated (docs/real_data.md), so the bank is a cache, never committed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from train.data.pts300w import read_pts
from train.data.real import load_manifest

__all__ = ["SkinBank", "SkinPatch", "build_skin_bank", "load_skin_bank"]

CHEEKS = ((2, 31), (14, 35))  # (jaw point, nose point), 0-based iBUG indices, per cheek
BANK_VERSION = 1  # bump when the extraction changes (invalidates banks and renders made with them)


@dataclass(frozen=True)
class SkinPatch:
    """One real skin patch: mean ``colour`` [3] (0-255) and ``detail`` [P, P] float32 (about 1)."""

    colour: np.ndarray
    detail: np.ndarray
    source: str  # face id in the real cache


@dataclass(frozen=True)
class SkinBank:
    """``colours`` [N, 3], ``details`` [N, P, P], ``ids`` [N] and a ``fingerprint`` for cache keys."""

    colours: np.ndarray
    details: np.ndarray
    ids: tuple[str, ...]
    fingerprint: str

    def __len__(self) -> int:
        return len(self.ids)

    def pick(self, rng: np.random.Generator) -> SkinPatch:
        i = int(rng.integers(len(self.ids)))
        return SkinPatch(colour=self.colours[i], detail=self.details[i], source=self.ids[i])


def cheek_patch(image: Image.Image, points: np.ndarray, jaw: int, nose: int, size: int) -> np.ndarray | None:
    """The [size, size, 3] float32 square between ``points[jaw]`` and ``points[nose]``, or None."""
    a, b = points[jaw], points[nose]
    centre = (a + b) / 2.0
    half = 0.28 * float(np.linalg.norm(b - a))
    if half < 6.0:  # a cheek of a dozen pixels has no detail to give
        return None
    x0, y0 = centre - half
    x1, y1 = centre + half
    if x0 < 0 or y0 < 0 or x1 > image.width or y1 > image.height:
        return None
    crop = image.crop((int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))))
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def patch_parts(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(colour [3], detail [P, P]) of a patch [P, P, 3], or None where it is not plain skin."""
    colour = rgb.reshape(-1, 3).mean(axis=0)
    if not 50.0 <= float(colour.mean()) <= 235.0 or colour[0] < colour[2]:
        return None
    lum = rgb.mean(axis=2)
    blur_img = Image.fromarray(np.clip(lum, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(max(1.0, rgb.shape[0] / 12.0))
    )
    detail = lum / np.maximum(np.asarray(blur_img, dtype=np.float32), 1.0)
    if float(detail.std()) > 0.08:
        return None
    detail = np.clip(detail / float(detail.mean()), 0.75, 1.25).astype(np.float32)
    return colour.astype(np.float32), detail


def build_skin_bank(root: Path, size: int = 32) -> SkinBank:
    """Cut the bank from the kept **train** faces of the real-face cache at ``root``."""
    root = Path(root)
    manifest = load_manifest(root)
    colours: list[np.ndarray] = []
    details: list[np.ndarray] = []
    ids: list[str] = []
    for face in manifest["faces"]:
        if not face.get("kept") or face.get("split") != "train":  # the test split stays unseen
            continue
        points = read_pts(root / face["pts"])
        if len(points) != 68:
            continue
        with Image.open(root / face["image"]) as im:
            image = im.convert("RGB")
        for side, (jaw, nose) in enumerate(CHEEKS):
            rgb = cheek_patch(image, points, jaw, nose, size)
            parts = patch_parts(rgb) if rgb is not None else None
            if parts is not None:
                colours.append(parts[0])
                details.append(parts[1])
                ids.append(f"{face['id']}#{'lr'[side]}")
    if not ids:
        raise ValueError(f"no usable skin patch in the train faces of {root}")
    key = json.dumps({"v": BANK_VERSION, "size": size, "ids": ids}, sort_keys=True)
    digest = hashlib.sha256(key.encode())
    digest.update(np.ascontiguousarray(np.stack(details)).tobytes())
    return SkinBank(
        colours=np.stack(colours),
        details=np.stack(details),
        ids=tuple(ids),
        fingerprint=digest.hexdigest()[:16],
    )


_BANKS: dict[tuple[str, int], SkinBank] = {}


def load_skin_bank(root: Path, size: int = 32) -> SkinBank:
    """The train-split bank of the cache at ``root``, cut once per process."""
    key = (str(Path(root).resolve()), int(size))
    if key not in _BANKS:
        _BANKS[key] = build_skin_bank(Path(root), size)
    return _BANKS[key]
