"""One network's crop cut from another's, inside a stage graph: how a pose gate runs a turned-face network
whose crop geometry differs from the frontal network's (issue 18: the Face Mesh trunk, 192 px at 1.7x the box,
gated with face-api's turned-face specialist, 112 px at 1.25x).

A stage crops every face once, by the frontal network's geometry. Both geometries square the same box
(stage 1: the face box; later stages: the de-rotated tight box of the previous points) and remove the same
roll, so the turned network's crop is a fixed square window of the frontal one: in crop pixels (pixel
centres at i + 0.5),

    u_frontal = a * u_turned + b,   a = (S_f / scale_f) / (S_t / scale_t),
    b = S_f / 2 - a * S_t / 2 + (S_f / scale_f) * (shift_t - shift_f)

The graph resamples that window bilinearly (ONNX ``GridSample``), changes the normalisation, runs the turned
network, and maps its crop-unit output back into the frontal crop's units:
``o_f = (a * S_t * o_t + b) / S_f``.
Exact for later stages. For stage 1 the rule's shift is in image axes, so where the runtime rotates a crop
(a detector's roll estimate) the window sits ``|shift_t - shift_f| * sin(roll)`` of the box off the turned
network's own crop; the points still map back exactly, since the window's map is the one used.

The window must lie inside the frontal crop, and must not be upsampled (``a >= 1``): the turned network would
see less detail than its own crop gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

__all__ = ["CropMap", "crop_map", "crop_map_nodes", "map_output", "resample"]


@dataclass(frozen=True)
class CropMap:
    """The turned network's crop as a window of the frontal one (module docstring); both normalisations."""

    frontal_size: int
    turned_size: int
    scale: float  # a: frontal crop pixels per turned crop pixel
    offset: tuple[float, float]  # b (x, y): frontal crop pixels
    frontal_norm: tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel, 0..255 scale
    turned_norm: tuple[tuple[float, ...], tuple[float, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "frontal_size": self.frontal_size,
            "turned_size": self.turned_size,
            "scale": self.scale,
            "offset": list(self.offset),
            "window_frontal_px": [*self.offset, *(o + self.scale * self.turned_size for o in self.offset)],
        }

    def channel_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """``[3]`` gain and bias taking the frontal network's input to the turned one's:
        ``x_t = x_f * s_f / s_t + (m_f - m_t) / s_t``."""
        mf, sf = (np.asarray(v, dtype=np.float64) for v in self.frontal_norm)
        mt, st = (np.asarray(v, dtype=np.float64) for v in self.turned_norm)
        return sf / st, (mf - mt) / st

    def output_affine(self, num_points: int) -> tuple[np.ndarray, np.ndarray]:
        """``[2K]`` gain and bias taking the turned network's crop-unit output to the frontal crop's units."""
        gain = np.full(2 * num_points, self.scale * self.turned_size / self.frontal_size)
        bias = np.tile(np.asarray(self.offset, dtype=np.float64) / self.frontal_size, num_points)
        return gain, bias


def _rule(spec: Any) -> tuple[float, float, float, str]:
    r = spec.crop_rule
    return float(r.scale), float(r.shift_x), float(r.shift_y), str(r.roll)


def _norm(spec: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    n = spec.normalisation
    return tuple(float(v) for v in n.mean), tuple(float(v) for v in n.std)


def crop_map(frontal: Any, turned: Any, *, stage: int) -> CropMap | None:
    """Two ``model_store.manifest.StageSpec`` of stage ``stage`` (1-based) -> the turned network's crop as a
    window of the frontal one, or None where the two geometries are the same. Raises ValueError where the
    window cannot be cut: a later stage whose roll rules differ, a window reaching outside the frontal crop,
    or one that would be upsampled."""
    (sc_f, x_f, y_f, roll_f), (sc_t, x_t, y_t, roll_t) = _rule(frontal), _rule(turned)
    size_f, size_t = int(frontal.input_size), int(turned.input_size)
    norm_f, norm_t = _norm(frontal), _norm(turned)
    if (size_f, sc_f, x_f, y_f) == (size_t, sc_t, x_t, y_t) and (stage == 1 or roll_f == roll_t):
        return None if norm_f == norm_t else CropMap(size_f, size_t, 1.0, (0.0, 0.0), norm_f, norm_t)
    if stage > 1 and roll_f != roll_t:
        raise ValueError(f"stage {stage}: the crops remove different rolls ({roll_f} and {roll_t})")
    per_ref = size_f / sc_f  # frontal crop pixels per box side
    a = per_ref / (size_t / sc_t)
    b = tuple(size_f / 2 - a * size_t / 2 + per_ref * (t - f) for f, t in ((x_f, x_t), (y_f, y_t)))
    if a < 1.0 - 1e-9:
        raise ValueError(
            f"stage {stage}: the turned network's crop would be upsampled from the frontal one "
            f"({size_t} px from {a * size_t:.1f})"
        )
    lo, hi = min(b), max(b) + a * size_t
    if lo < -1e-6 or hi > size_f + 1e-6:
        raise ValueError(
            f"stage {stage}: the turned network's crop reaches outside the frontal one "
            f"(window {lo:.1f}..{hi:.1f} of {size_f} px)"
        )
    return CropMap(size_f, size_t, float(a), (float(b[0]), float(b[1])), norm_f, norm_t)


def _grid(m: CropMap) -> np.ndarray:
    """``[S_t, S_t, 2]`` frontal crop pixel (x, y) of each turned crop pixel centre."""
    u = np.arange(m.turned_size, dtype=np.float64) + 0.5
    gx = m.scale * u + m.offset[0]
    gy = m.scale * u + m.offset[1]
    return np.stack(np.meshgrid(gx, gy, indexing="xy"), axis=-1)


def resample(x: np.ndarray, m: CropMap) -> np.ndarray:
    """What the graph computes, in numpy: frontal network input ``[N, 3, S_f, S_f]`` -> the turned
    network's ``[N, 3, S_t, S_t]`` (bilinear, samples outside the crop read 0, then the normalisation)."""
    x = np.asarray(x, dtype=np.float64)
    g = _grid(m) - 0.5  # index space: pixel i's centre at i
    x0, y0 = np.floor(g[..., 0]).astype(int), np.floor(g[..., 1]).astype(int)
    fx, fy = g[..., 0] - x0, g[..., 1] - y0
    size = x.shape[-1]
    out = np.zeros((*x.shape[:2], m.turned_size, m.turned_size))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
            v = x[:, :, np.clip(yi, 0, size - 1), np.clip(xi, 0, size - 1)]
            out += v * (wx * wy * inside)
    gain, bias = m.channel_affine()
    return (out * gain[None, :, None, None] + bias[None, :, None, None]).astype(np.float32)


def map_output(out_t: np.ndarray, m: CropMap) -> np.ndarray:
    """The turned network's ``[N, 2K]`` crop-unit output -> the frontal crop's units."""
    o = np.asarray(out_t, dtype=np.float64)
    gain, bias = m.output_affine(o.shape[1] // 2)
    return (o * gain + bias).astype(np.float32)


def crop_map_nodes(
    m: CropMap, crops: str, resampled: str, out_t: str, mapped: str, num_points: int, prefix: str = "xcrop/"
) -> tuple[list[NodeProto], list[NodeProto], list[TensorProto]]:
    """ONNX nodes (opset >= 16) of :func:`resample` (``crops`` -> ``resampled``) and of :func:`map_output`
    (``out_t`` -> ``mapped``), and the constants both read."""
    grid = (2.0 * _grid(m) / m.frontal_size - 1.0).astype(np.float32)[None]  # align_corners=0 units
    c_gain, c_bias = m.channel_affine()
    o_gain, o_bias = m.output_affine(num_points)

    def const(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(value, prefix + name)

    inits = [
        const("grid", grid),
        const("grid_tail", np.array(grid.shape[1:], dtype=np.int64)),
        const("zero", np.array([0], dtype=np.int64)),
        const("one", np.array([1], dtype=np.int64)),
        const("c_gain", c_gain.astype(np.float32).reshape(1, 3, 1, 1)),
        const("c_bias", c_bias.astype(np.float32).reshape(1, 3, 1, 1)),
        const("o_gain", o_gain.astype(np.float32)),
        const("o_bias", o_bias.astype(np.float32)),
    ]
    p, n = prefix, helper.make_node
    sample = [
        n("Shape", [crops], [p + "shape"], name=p + "shape"),
        n("Slice", [p + "shape", p + "zero", p + "one"], [p + "rows"], name=p + "rows"),
        n("Concat", [p + "rows", p + "grid_tail"], [p + "grid_shape"], name=p + "grid_shape", axis=0),
        n("Expand", [p + "grid", p + "grid_shape"], [p + "grids"], name=p + "grids"),
        n(
            "GridSample",
            [crops, p + "grids"],
            [p + "window"],
            name=p + "sample",
            mode="bilinear",
            padding_mode="zeros",
            align_corners=0,
        ),
        n("Mul", [p + "window", p + "c_gain"], [p + "window_gain"], name=p + "norm_gain"),
        n("Add", [p + "window_gain", p + "c_bias"], [resampled], name=p + "norm_bias"),
    ]
    back = [
        n("Mul", [out_t, p + "o_gain"], [p + "out_gain"], name=p + "out_gain"),
        n("Add", [p + "out_gain", p + "o_bias"], [mapped], name=p + "out_bias"),
    ]
    return sample, back, inits
