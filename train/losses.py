"""Landmark regression losses as pure functions.

Two layers:

* element-wise penalties on an error ``x`` given in PIXELS of the network input
  (``l2``, ``l1``, ``smooth_l1``, ``wing``, ``adaptive_wing``), any shape in, same shape out;
* :func:`landmark_loss`, the API training uses: predictions and targets in CROP UNITS (the
  network output convention of model_store: crop pixels divided by the crop size ``S``),
  converted to pixels by multiplying with ``input_size`` BEFORE the penalty is applied.

The unit conversion matters for Wing: with ``w=10, eps=2`` chosen for pixel errors, errors
in crop units (< 1) all fall in the logarithmic part where ``w*ln(1+|x|/eps)`` is almost
exactly ``(w/eps)*|x|``, i.e. a scaled L1 loss (see tests/train/test_losses.py).

Reference: Feng, Kittler, Awais, Huber, Wu, "Wing Loss for Robust Facial Landmark
Localisation with Convolutional Neural Networks", CVPR 2018, Eq. (5) and Sec. 4.
Adaptive Wing: Wang, Bo, Fuxin, "Adaptive Wing Loss for Robust Face Alignment via
Heatmap Regression", ICCV 2019, Eq. (6)-(7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model_store.geometry import tight_box
from model_store.schemes import Scheme

__all__ = [
    "LOSSES",
    "adaptive_wing",
    "l1",
    "l2",
    "landmark_loss",
    "make_loss",
    "normaliser_weights",
    "smooth_l1",
    "wing",
    "wing_constant",
]


def l2(x: Tensor) -> Tensor:
    """``0.5 * x**2`` element-wise (the paper's L2). ``x``: any shape, pixels."""
    return 0.5 * x * x


def l1(x: Tensor) -> Tensor:
    """``|x|`` element-wise. ``x``: any shape, pixels."""
    return x.abs()


def smooth_l1(x: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth L1 (Girshick, Fast R-CNN): ``0.5*x**2/beta`` if ``|x| < beta`` else ``|x| - 0.5*beta``.

    ``x``: any shape, pixels; ``beta`` in pixels (Fast R-CNN's 1).
    """
    if beta <= 0:
        raise ValueError("beta must be positive")
    a = x.abs()
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def wing_constant(w: float, eps: float) -> float:
    """``C = w - w*ln(1 + w/eps)``: makes Wing continuous at ``|x| = w`` (paper Eq. 5)."""
    return w - w * math.log1p(w / eps)


def wing(x: Tensor, w: float = 10.0, eps: float = 2.0) -> Tensor:
    """Wing loss element-wise (Feng et al. 2018, Eq. 5); ``x``: any shape, pixels.

    ``w*ln(1 + |x|/eps)`` if ``|x| < w`` else ``|x| - C`` with ``C = w - w*ln(1 + w/eps)``.
    The paper's defaults ``w=10, eps=2`` assume pixel errors on the network input.
    """
    if w <= 0 or eps <= 0:
        raise ValueError("w and eps must be positive")
    a = x.abs()
    c = wing_constant(w, eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def adaptive_wing(
    x: Tensor,
    *,
    omega: float = 14.0,
    theta: float = 0.5,
    eps: float = 1.0,
    alpha: float = 2.1,
    y: float = 1.0,
) -> Tensor:
    """Adaptive Wing loss element-wise (Wang et al. 2019, Eq. 6-7); ``x``: any shape, pixels.

    ``omega*ln(1 + |x/eps|**(alpha-y))`` if ``|x| < theta`` else ``A*|x| - C``. It was designed for
    heatmaps where ``y`` is the target pixel value; for coordinate regression ``y`` is a constant
    (default 1, the foreground case, exponent ``alpha - y = 1.1``), which keeps the loss smooth at 0.
    ``A`` and ``C`` make it continuous and differentiable at ``|x| = theta``.
    """
    p = alpha - y
    if p <= 0:
        raise ValueError("alpha - y must be positive")
    r = theta / eps
    big_a = omega * (1.0 / (1.0 + r**p)) * p * (r ** (p - 1.0)) / eps
    big_c = theta * big_a - omega * math.log1p(r**p)
    a = x.abs()
    small = omega * torch.log1p((a / eps).clamp(min=0.0) ** p)
    return torch.where(a < theta, small, big_a * a - big_c)


Penalty = Callable[[Tensor], Tensor]

#: loss name -> factory(**params) -> element-wise penalty on pixel errors
LOSSES: dict[str, Callable[..., Penalty]] = {
    "l2": lambda: l2,
    "l1": lambda: l1,
    "smooth_l1": lambda beta=1.0: lambda x: smooth_l1(x, beta),
    "wing": lambda w=10.0, eps=2.0: lambda x: wing(x, w, eps),
    "adaptive_wing": lambda omega=14.0, theta=0.5, eps=1.0, alpha=2.1, y=1.0: (
        lambda x: adaptive_wing(x, omega=omega, theta=theta, eps=eps, alpha=alpha, y=y)
    ),
}


def make_loss(spec: Mapping[str, Any]) -> Penalty:
    """Element-wise penalty from a config mapping, e.g. ``{"name": "wing", "w": 10, "eps": 2}``."""
    params = dict(spec)
    name = str(params.pop("name"))
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](**params)


def landmark_loss(
    pred: Tensor, target: Tensor, input_size: int, penalty: Penalty, weights: Tensor | None = None
) -> Tensor:
    """Per-sample sum of ``penalty`` over all coordinates, averaged over the batch (paper Eq. 1).

    ``pred``, ``target``: ``[N, 2K]`` (or ``[N, K, 2]``) in CROP UNITS; ``input_size``: the crop
    side ``S`` in pixels. Errors are converted to pixels (``* S``) before the penalty.
    ``weights``: optional ``[N, K]`` per-point weights (both coordinates of a point get its weight;
    e.g. low where teacher labels disagree); None is all ones. Returns a scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if input_size <= 1:
        raise ValueError("input_size is the crop side in pixels (e.g. 64), not 1")
    err_px = (pred - target).reshape(pred.shape[0], -1) * float(input_size)  # (N, 2K) pixels
    per_coord = penalty(err_px)  # (N, 2K)
    if weights is not None:
        k = per_coord.shape[1] // 2
        if tuple(weights.shape) != (pred.shape[0], k):
            raise ValueError(f"weights must be [N, K] = {(pred.shape[0], k)}, got {tuple(weights.shape)}")
        per_coord = per_coord * weights.to(per_coord.dtype).repeat_interleave(2, dim=1)  # (N, 2K)
    return per_coord.sum(dim=1).mean()


def normaliser_weights(points: np.ndarray, scheme: Scheme, ref: float, cap: float) -> np.ndarray:
    """Per-face loss weights that bring the training loss towards the NME's units.

    The penalty sees errors in crop pixels, a fixed share of the face box, while the NME divides by
    the scheme's normaliser: for ibug68 the outer-eye-corner distance, about 0.66 of the box on a
    frontal face and under 0.2 in profile, so an error of the same size in the box counts several
    times more in the NME of a turned face. A face whose normaliser is ``r`` of its tight box's size
    (``sqrt(w * h)``) gets ``clip(ref / r, 1, cap)``: 1 at and above ``r = ref``, growing as the
    normaliser shrinks, at most ``cap`` (the near-profile faces whose normaliser vanishes).

    Args:
        points: ``[N, K, 2]`` ground-truth landmarks (any pixel units).
        scheme: the landmark scheme (its normaliser).
        ref: the ratio that gets weight 1 (> 0).
        cap: the largest weight (>= 1).
    Returns:
        ``[N]`` float32 weights in ``[1, cap]``.
    """
    if ref <= 0 or cap < 1:
        raise ValueError(f"normaliser_weights needs ref > 0 and cap >= 1, got ref={ref}, cap={cap}")
    pts = np.asarray(points, dtype=np.float64)
    boxes = tight_box(pts)  # (N, 4)
    size = np.sqrt(np.clip((boxes[:, 2:] - boxes[:, :2]).prod(axis=1), 1e-12, None))  # (N,)
    ratio = scheme.normaliser_distance(pts, boxes) / size  # (N,)
    return np.clip(ref / np.maximum(ratio, 1e-12), 1.0, float(cap)).astype(np.float32)
