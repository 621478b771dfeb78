"""AFLW-Full (19 points) from ``AFLWinfo_release.mat`` (Zhu et al., CVPR 2016, "Unconstrained face
alignment via cascaded compositional learning"), the annotation file every AFLW-Full result uses.

Fields of the released file (N = 24,386 faces), as read by the public loaders:

- ``data``      [N, 38]: 19 x-coordinates, then 19 y-coordinates (AFLW's 21 points without the two
  ears). A 42-column variant (21 x, then 21 y) is accepted too: its ears, points 13 and 17 (1-based),
  are dropped.
- ``bbox``      [N, 4]: the face box as x1, x2, y1, y2 (left, right, top, bottom).
- ``mask_new``  [N, 19]: 1 where the point is visible.
- ``nameList``  [N, 1] cell of image paths relative to the AFLW image folder (``flickr/``).
- ``ra``        [1, N]: a 1-based random permutation; its first 20,000 entries are the training
  faces and the remaining 4,386 the test faces (AFLW-Full).

The point order of the file is the ``aflw19`` scheme's (brows, eyes, nose, mouth, chin; "left" in
AFLW names the image's left, i.e. the subject's right). Coordinates are Matlab 1-based pixel
positions; they are converted to the model_store convention like ``.pts`` files (x - 0.5), the box
likewise. ``Sample.box`` is the dataset's box, which the AFLW-Full NME normalises by (sqrt(w * h));
the tight box of the points is in ``meta["tight_box"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model_store.geometry import tight_box
from train.data.types import Sample, SampleSequence

__all__ = ["AFLW_TRAIN_COUNT", "AflwFull", "load_aflw_full", "read_aflw_info"]

AFLW_TRAIN_COUNT = 20000
_EARS_21 = (12, 16)  # 0-based indices of the ears in AFLW's 21-point order


def _names(cell: Any) -> list[str]:
    """nameList as loaded by scipy ([N, 1] object array of 1-element string arrays) -> list of str."""
    arr = np.asarray(cell, dtype=object).reshape(-1)
    out = []
    for v in arr:
        while isinstance(v, np.ndarray):
            v = v.reshape(-1)[0] if v.size else ""
        out.append(str(v))
    return out


def read_aflw_info(mat_path: Path | str) -> dict[str, np.ndarray | list[str]]:
    """Load ``AFLWinfo_release.mat``.

    Returns a dict with ``points`` [N, 19, 2] float32 (our convention), ``boxes`` [N, 4] float32 x1, y1,
    x2, y2 (our convention), ``visible`` [N, 19] bool, ``names`` (list of N str) and ``order`` [N] int64
    (the 0-based permutation ``ra - 1``).
    """
    from scipy.io import loadmat

    mat = loadmat(str(mat_path))
    for key in ("data", "bbox", "nameList", "ra"):
        if key not in mat:
            raise ValueError(f"{mat_path}: no {key!r} field; not an AFLWinfo_release-style file")
    data = np.asarray(mat["data"], dtype=np.float64)
    n = data.shape[0]
    if data.shape[1] == 38:
        xs, ys = data[:, :19], data[:, 19:]
    elif data.shape[1] == 42:
        keep = [i for i in range(21) if i not in _EARS_21]
        xs, ys = data[:, :21][:, keep], data[:, 21:][:, keep]
    else:
        raise ValueError(f"{mat_path}: data has {data.shape[1]} columns; expected 38 (19 x, 19 y) or 42")
    points = np.stack([xs, ys], axis=-1) - 0.5
    bbox = np.asarray(mat["bbox"], dtype=np.float64).reshape(n, 4)
    boxes = np.stack([bbox[:, 0], bbox[:, 2], bbox[:, 1], bbox[:, 3]], axis=1) - 0.5
    if "mask_new" in mat:
        mask = np.asarray(mat["mask_new"]).reshape(n, -1)
        if mask.shape[1] == 21:
            mask = mask[:, [i for i in range(21) if i not in _EARS_21]]
        visible = mask.astype(bool)
    else:
        visible = np.ones((n, 19), dtype=bool)
    order = np.asarray(mat["ra"], dtype=np.int64).reshape(-1) - 1
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError(f"{mat_path}: ra is not a permutation of 1..{n}")
    names = _names(mat["nameList"])
    if len(names) != n:
        raise ValueError(f"{mat_path}: {len(names)} names for {n} faces")
    return {
        "points": points.astype(np.float32),
        "boxes": boxes.astype(np.float32),
        "visible": visible,
        "names": names,
        "order": order,
    }


class AflwFull(SampleSequence):
    """AFLW-Full train (first ``train_count`` of ``ra``) or test (the rest); images read lazily."""

    scheme = "aflw19"

    def __init__(
        self, mat_path: Path | str, image_root: Path | str, split: str, *, train_count: int = AFLW_TRAIN_COUNT
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"unknown AFLW-Full split {split!r}; known: ['test', 'train']")
        info = read_aflw_info(mat_path)
        order = np.asarray(info["order"])
        self._idx = order[:train_count] if split == "train" else order[train_count:]
        self._info = info
        self.image_root = Path(image_root)
        self.split = split
        self.name = f"aflw-full-{split}"

    def __len__(self) -> int:
        return len(self._idx)

    def _load(self, index: int) -> Sample:
        j = int(self._idx[index])
        names = self._info["names"]
        assert isinstance(names, list)
        path = self.image_root / names[j]
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        points = np.asarray(self._info["points"])[j].copy()
        box = np.asarray(self._info["boxes"])[j].copy()
        meta = {
            "subset": self.name,
            "path": str(path),
            "index": j,
            "visible": np.asarray(self._info["visible"])[j].copy(),
            "tight_box": tight_box(points).astype(np.float32),
        }
        return Sample(image=image, points=points, box=box, scheme=self.scheme, meta=meta)


def load_aflw_full(mat_path: Path, image_root: Path, split: str) -> Sequence[Sample]:
    """AFLW-Full ``split`` (train: 20,000 faces | test: 4,386) from ``AFLWinfo_release.mat``."""
    return AflwFull(mat_path, image_root, split)
