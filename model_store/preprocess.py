"""Crop -> network input tensor, and network output -> crop pixels (numpy only).

Every stage of every wingmark model takes RGB NCHW float32 input normalised as
``(pixel - mean) / std`` and outputs ``[N, 2K]`` coordinates (x0, y0, x1, y1, ...) in
*crop units*: crop pixel coordinates divided by the crop size S.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Normalisation", "from_output", "to_input"]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel (R, G, B) mean and std on the 0..255 pixel scale."""

    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}


def to_input(crops: np.ndarray, norm: Normalisation) -> np.ndarray:
    """[N, S, S, 3] RGB 0..255 (any real dtype) -> [N, 3, S, S] float32 contiguous.

    uint8 crops (``model_store.crop``) are looked up in a per-channel table of ``(v - mean) / std``
    (the same float32 values, written straight into NCHW order: a quarter of the arithmetic's time).
    """
    c = np.asarray(crops)
    if c.ndim != 4 or c.shape[-1] != 3:
        raise ValueError(f"expected crops [N, S, S, 3], got {c.shape}")
    if c.dtype == np.uint8:
        table = _table(norm)
        x = np.empty((c.shape[0], 3, c.shape[1], c.shape[2]), dtype=np.float32)
        for ch in range(3):
            np.take(table[ch], c[..., ch], out=x[:, ch])
        return x
    x = c.astype(np.float32)
    x -= np.asarray(norm.mean, dtype=np.float32)
    x /= np.asarray(norm.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@functools.cache
def _table(norm: Normalisation) -> np.ndarray:
    """[3, 256] float32: ``(v - mean) / std`` of every uint8 value v, per channel."""
    v = np.arange(256, dtype=np.float32)[None, :]
    mean = np.asarray(norm.mean, dtype=np.float32)[:, None]
    std = np.asarray(norm.std, dtype=np.float32)[:, None]
    table = (v - mean) / std
    table.setflags(write=False)
    return table


def from_output(output: np.ndarray, num_points: int, size: int) -> np.ndarray:
    """[N, 2K] crop-unit network output -> [N, K, 2] crop pixels (float64)."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != 2 * num_points:
        raise ValueError(f"expected output [N, {2 * num_points}], got {out.shape}")
    return out.reshape(out.shape[0], num_points, 2) * size
