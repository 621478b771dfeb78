"""WFLW (Wu et al., "Look at Boundary", CVPR 2018): 98 points, read from its published text lists.

Layout under ``root``::

    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt   (7,500 faces)
    WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt    (2,500 faces)
    WFLW_images/<event folder>/<image>.jpg

Each line holds 196 numbers (x0 y0 x1 y1 ... x97 y97), the face box x_min y_min x_max y_max, six 0/1
attributes (pose, expression, illumination, make-up, occlusion, blur) and the image path relative to
``WFLW_images``. The test subsets of the benchmark are the test faces with one attribute set
(``test_pose`` ... ``test_blur``).

Coordinates are taken as 0-based pixel positions (the centre of the top-left pixel is (0, 0), as in
the OpenCV-based tools the annotations were made with) and converted to the model_store convention
with x + 0.5. The ``wflw98`` scheme is defined here, not in model_store: only this reader knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model_store.schemes import Scheme
from train.data.types import Sample, SampleSequence

__all__ = ["ATTRIBUTES", "WFLW98", "WflwDataset", "load_wflw", "parse_wflw_line"]

ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")
_LISTS = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_{}.txt"


def _wflw98_names() -> tuple[str, ...]:
    names = [f"contour_{i}" for i in range(33)]  # 0-15 the subject's right, 16 chin, 17-32 left
    names += [f"right_brow_upper_{i}" for i in range(5)] + [f"right_brow_lower_{i}" for i in range(4)]
    names += [f"left_brow_upper_{i}" for i in range(5)] + [f"left_brow_lower_{i}" for i in range(4)]
    names += [f"nose_bridge_{i}" for i in range(4)] + [f"nose_base_{i}" for i in range(5)]
    names += [f"right_eye_{i}" for i in range(8)] + [f"left_eye_{i}" for i in range(8)]
    names += [f"outer_lip_{i}" for i in range(12)] + [f"inner_lip_{i}" for i in range(8)]
    names += ["right_pupil", "left_pupil"]
    return tuple(names)


# Mirror pairs of the 98-point mark-up (0-based), as listed in mmpose's WFLW dataset config.
_WFLW98_FLIP: tuple[tuple[int, int], ...] = (
    *((i, 32 - i) for i in range(16)),  # contour
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42),  # upper brow edges
    (38, 50), (39, 49), (40, 48), (41, 47),  # lower brow edges
    (55, 59), (56, 58),  # nose base
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),  # eyes
    (76, 82), (77, 81), (78, 80), (83, 87), (84, 86),  # outer lips
    (88, 92), (89, 91), (93, 95),  # inner lips
    (96, 97),  # pupils
)  # fmt: skip

WFLW98 = Scheme(
    name="wflw98",
    names=_wflw98_names(),
    flip_pairs=_WFLW98_FLIP,
    normaliser="inter_ocular",
    normaliser_indices=(60, 72),  # outer eye corners, WFLW's standard NME normaliser
    right_eye=tuple(range(60, 68)),
    left_eye=tuple(range(68, 76)),
)


@dataclass(frozen=True)
class _Record:
    points: np.ndarray  # [98, 2] model_store convention
    box: np.ndarray  # [4]
    attributes: dict[str, bool]
    name: str


def parse_wflw_line(line: str) -> _Record:
    """One annotation line -> points [98, 2] (x + 0.5), box [4] x1, y1, x2, y2, attributes, image path."""
    parts = line.split()
    if len(parts) != 196 + 4 + 6 + 1:
        raise ValueError(f"a WFLW line has 207 fields, this one {len(parts)}")
    values = np.asarray([float(v) for v in parts[:200]], dtype=np.float64)
    points = (values[:196].reshape(98, 2) + 0.5).astype(np.float32)
    box = (values[196:200] + 0.5).astype(np.float32)
    flags = [int(v) for v in parts[200:206]]
    return _Record(points, box, dict(zip(ATTRIBUTES, (f == 1 for f in flags), strict=True)), parts[206])


class WflwDataset(SampleSequence):
    """A WFLW split: train, test, or test_<attribute> for one of ``ATTRIBUTES`` (e.g. test_pose)."""

    scheme = WFLW98.name

    def __init__(self, root: Path | str, split: str) -> None:
        self.root = Path(root)
        self.split = split
        self.name = f"wflw-{split}"
        if split in ("train", "test"):
            source, attribute = split, None
        elif split.startswith("test_") and split[5:] in ATTRIBUTES:
            source, attribute = "test", split[5:]
        else:
            known = ["train", "test", *(f"test_{a}" for a in ATTRIBUTES)]
            raise ValueError(f"unknown WFLW split {split!r}; known: {known}")
        path = self.root / _LISTS.format(source)
        records = [parse_wflw_line(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        self._records = [r for r in records if attribute is None or r.attributes[attribute]]

    def __len__(self) -> int:
        return len(self._records)

    def _load(self, index: int) -> Sample:
        rec = self._records[index]
        path = self.root / "WFLW_images" / rec.name
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
        meta = {"subset": self.name, "path": str(path), **{f"attr_{k}": v for k, v in rec.attributes.items()}}
        return Sample(
            image=image, points=rec.points.copy(), box=rec.box.copy(), scheme=self.scheme, meta=meta
        )


def load_wflw(root: Path | str, split: str) -> Sequence[Sample]:
    """WFLW ``split`` under ``root`` (the folder holding WFLW_annotations and WFLW_images)."""
    return WflwDataset(root, split)
