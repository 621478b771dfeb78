"""300-W in its published layout: iBUG ``.pts`` files beside the images.

Expected folders under ``root`` (names matched case-insensitively)::

    lfpw/trainset  lfpw/testset  helen/trainset  helen/testset  afw  ibug
    300W/01_Indoor  300W/02_Outdoor        (the 600-image 300-W test set, when present)

Splits (Sagonas et al., 300 Faces in-the-Wild challenge, 2013; the protocol used by Feng et al.):

=============  ====================================  ======
split          folders                               images
=============  ====================================  ======
train          lfpw/trainset + helen/trainset + afw   3,148
common         lfpw/testset + helen/testset             554
challenging    ibug                                     135
full           common + challenging                     689
test600        300W/01_Indoor + 300W/02_Outdoor         600
=============  ====================================  ======

``.pts`` coordinates are 1-based pixel positions; they are converted to the model_store convention
(origin at the top-left pixel's corner): x_ours = x_pts - 0.5. The face box of each sample is the
tight box of its 68 points.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model_store.geometry import tight_box
from train.data.types import Sample, SampleSequence

__all__ = ["SPLITS", "Pts300W", "load_300w", "read_pts", "write_pts"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# split -> folders (relative to root, each as path components)
SPLITS: dict[str, tuple[tuple[str, ...], ...]] = {
    "train": (("lfpw", "trainset"), ("helen", "trainset"), ("afw",)),
    "common": (("lfpw", "testset"), ("helen", "testset")),
    "challenging": (("ibug",),),
    "full": (("lfpw", "testset"), ("helen", "testset"), ("ibug",)),
    "test600": (("300W", "01_Indoor"), ("300W", "02_Outdoor")),
}
# Published sizes, for a warning-free sanity check by callers (see ``Pts300W.expected_size``).
EXPECTED_SIZES = {"train": 3148, "common": 554, "challenging": 135, "full": 689, "test600": 600}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def read_pts(path: Path | str) -> np.ndarray:
    """Read an iBUG ``.pts`` file -> [K, 2] float32 in model_store pixel coordinates (x_pts - 0.5)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"n_points\s*:\s*(\d+)", text)
    body = re.search(r"\{(.*?)\}", text, flags=re.S)
    if m is None or body is None:
        raise ValueError(f"{path}: not an iBUG .pts file (needs 'n_points:' and a {{...}} block)")
    n = int(m.group(1))
    values = [float(v) for v in re.findall(_NUMBER, body.group(1))]
    if len(values) != 2 * n:
        raise ValueError(f"{path}: n_points is {n} but the block holds {len(values)} numbers")
    return (np.asarray(values, dtype=np.float64).reshape(n, 2) - 0.5).astype(np.float32)


def write_pts(path: Path | str, points: np.ndarray) -> None:
    """Write [K, 2] model_store-convention points as an iBUG ``.pts`` file (1-based: x + 0.5)."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"expected points [K, 2], got {p.shape}")
    lines = ["version: 1", f"n_points:  {len(p)}", "{"]
    lines += [f"{x + 0.5:.3f} {y + 0.5:.3f}" for x, y in p]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _child(folder: Path, name: str) -> Path | None:
    """The entry of ``folder`` called ``name``, compared case-insensitively (exact match first)."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def _image_for(pts: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (pts.with_suffix(suffix), pts.with_suffix(suffix.upper())):
            if cand.exists():
                return cand
    return None


@dataclass(frozen=True)
class _Item:
    image: Path
    pts: Path
    subset: str


class Pts300W(SampleSequence):
    """A 300-W split: images are read lazily, one ``Sample`` per ``.pts`` file."""

    scheme = "ibug68"

    def __init__(self, root: Path | str, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown 300-W split {split!r}; known: {sorted(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.name = f"300w-{split}"
        items: list[_Item] = []
        missing: list[str] = []
        for parts in SPLITS[split]:
            folder: Path | None = self.root
            for part in parts:
                folder = _child(folder, part) if folder is not None else None
            if folder is None:
                missing.append("/".join(parts))
                continue
            subset = "/".join(parts).lower()
            for pts in sorted(folder.glob("*.pts")):
                image = _image_for(pts)
                if image is None:
                    raise FileNotFoundError(f"{pts}: no image beside it ({', '.join(IMAGE_SUFFIXES)})")
                items.append(_Item(image, pts, subset))
        if missing and len(missing) == len(SPLITS[split]):
            raise FileNotFoundError(f"300-W split {split!r}: none of {missing} under {self.root}")
        self.missing = tuple(missing)
        self._items = items

    @property
    def expected_size(self) -> int:
        """The published number of images of this split."""
        return EXPECTED_SIZES[self.split]

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, index: int) -> Sample:
        item = self._items[index]
        points = read_pts(item.pts)
        if points.shape != (68, 2):
            raise ValueError(f"{item.pts}: expected 68 points, got {points.shape[0]}")
        with Image.open(item.image) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        box = tight_box(points).astype(np.float32)
        meta = {"subset": item.subset, "path": str(item.image), "split": self.split}
        return Sample(image=image, points=points, box=box, scheme=self.scheme, meta=meta)


def load_300w(root: Path | str, split: str) -> Sequence[Sample]:
    """The 300-W ``split`` (train | common | challenging | full | test600) under ``root``.

    Folders of a split that are absent are skipped (listed in ``.missing``); a split with none of
    its folders is an error.
    """
    return Pts300W(root, split)
