"""Head poses of landmarked faces, numpy only: ``model_store.pose.estimate_pose`` per face."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_store.pose import estimate_pose

__all__ = ["face_poses"]


def face_poses(
    landmarks: Sequence[np.ndarray | Sequence[Sequence[float]]], scheme: str, width: int, height: int
) -> list[dict[str, float] | None]:
    """Head pose of each face (``model_store.pose.estimate_pose``) from its landmarks [K, 2] in original
    image pixels; None for a face whose pose cannot be solved."""
    out: list[dict[str, float] | None] = []
    for pts in landmarks:
        try:
            out.append(estimate_pose(np.asarray(pts, dtype=np.float64), scheme, width, height).to_dict())
        except ValueError:
            out.append(None)
    return out
