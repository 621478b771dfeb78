"""The sample record every dataset yields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np

__all__ = ["LandmarkDataset", "Sample", "SampleSequence", "client_boxes"]


@dataclass
class Sample:
    """One annotated face.

    image: [H, W, 3] uint8 RGB.
    points: [K, 2] float32 landmarks in image pixels (model_store.geometry convention: origin at the
        top-left corner of the top-left pixel).
    box: [4] float32 x1, y1, x2, y2: the dataset's face box, or the tight box of the points.
    scheme: "ibug68" | "aflw19".
    meta: free-form, e.g. {"subset": ..., "yaw": deg, "pitch": deg, "roll": deg, "path": ...}.
    """

    image: np.ndarray
    points: np.ndarray
    box: np.ndarray
    scheme: str
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LandmarkDataset(Protocol):
    """What every dataset offers: a sequence of samples plus ``scheme`` and ``name``."""

    scheme: str
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class SampleSequence(Sequence[Sample]):
    """Base of the datasets: a subclass gives ``__len__`` and ``_load(index)``; integer and slice
    indexing come from here."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> Sample:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | Sequence[Sample]:
        if isinstance(index, slice):
            return [self._load(i) for i in range(*index.indices(len(self)))]
        return self._load(index)


def client_boxes(samples: Sequence[Sample]) -> np.ndarray:
    """The stage-1 face boxes ``[N, 4]`` an evaluation starts from: ``meta["client_box"]`` where a
    sample carries one (e.g. a detector's box sent as the client box), else the tight box of its
    landmarks (the documented client-box convention)."""
    from model_store.geometry import tight_box

    return np.stack(
        [
            np.asarray(s.meta["client_box"], dtype=np.float64)
            if s.meta.get("client_box") is not None
            else tight_box(np.asarray(s.points, dtype=np.float64))
            for s in samples
        ]
    ).reshape(-1, 4)
