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

Training and evaluation use the schemes the models have: the reader also gives each face as ``ibug68``
(the 68 of the 98 points that share the iBUG definition, :data:`IBUG68_FROM_WFLW98`) or ``aflw19``
(those 68 reduced by ``model_store.meanshape.aflw19_from_68``), keeping WFLW's face box. A dataset
spec ``{kind: wflw, root, split}`` (train.dataset.load_samples) reads it in the config's scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model_store.meanshape import aflw19_from_68
from model_store.schemes import Scheme
from train.data.types import Sample, SampleSequence

__all__ = [
    "ATTRIBUTES",
    "IBUG68_FROM_WFLW98",
    "SCHEMES",
    "WFLW98",
    "WflwDataset",
    "ibug68_from_wflw98",
    "load_wflw",
    "parse_wflw_line",
]

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


# The iBUG 68 points inside the 98-point mark-up (0-based): the 17 jaw points are every other contour
# point, the brows their upper edges, the nose as it is, each eye's six points its corners and the two
# outer points of each lid (WFLW adds a middle point per lid), both lips as they are.
IBUG68_FROM_WFLW98: tuple[int, ...] = (
    *range(0, 33, 2),  # jaw 0-16
    *range(33, 38), *range(42, 47),  # brows 17-26 (upper edges)
    *range(51, 60),  # nose bridge 27-30 and lower nose 31-35
    60, 61, 63, 64, 65, 67,  # right eye 36-41
    68, 69, 71, 72, 73, 75,  # left eye 42-47
    *range(76, 96),  # outer mouth 48-59, inner mouth 60-67
)  # fmt: skip

SCHEMES = ("wflw98", "ibug68", "aflw19")


def ibug68_from_wflw98(points: np.ndarray) -> np.ndarray:
    """[..., 98, D] -> [..., 68, D]: the iBUG points of a WFLW face (a selection, no interpolation)."""
    return np.asarray(points)[..., list(IBUG68_FROM_WFLW98), :]


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
    """A WFLW split: train, test, or test_<attribute> for one of ``ATTRIBUTES`` (e.g. test_pose), in
    ``scheme`` (one of :data:`SCHEMES`; default the native ``wflw98``)."""

    def __init__(self, root: Path | str, split: str, scheme: str = WFLW98.name) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"WFLW faces are read as one of {list(SCHEMES)}, not {scheme!r}")
        self.root = Path(root)
        self.split = split
        self.scheme = scheme
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
        points = rec.points.copy()
        if self.scheme != WFLW98.name:
            points = ibug68_from_wflw98(points)
            meta["from"] = WFLW98.name
        if self.scheme == "aflw19":
            points = aflw19_from_68(points).astype(np.float32)
        return Sample(image=image, points=points, box=rec.box.copy(), scheme=self.scheme, meta=meta)


def load_wflw(root: Path | str, split: str, scheme: str = WFLW98.name) -> Sequence[Sample]:
    """WFLW ``split`` under ``root`` (the folder holding WFLW_annotations and WFLW_images), in ``scheme``."""
    return WflwDataset(root, split, scheme)
