"""Evaluation metrics as pure numpy functions: NME, CED, AUC, failure rate, grouped summaries.

Definitions follow the landmark literature (e.g. Feng et al. 2018, Sec. 6; Sagonas et al. 2016
for 300-W): the normalised mean error of one face is the mean point-to-point Euclidean error
divided by the scheme's normaliser distance (inter-ocular for ibug68, face-box size for aflw19);
the cumulative error distribution (CED) is the fraction of faces whose NME is <= x; AUC is the
area under the CED from 0 to a threshold, divided by the threshold; the failure rate is the
fraction of faces with NME above the threshold. NMEs are fractions (0.036 = 3.6 %).

``large_pose_nme`` is the large-pose protocol of AFLW2000-3D (Zhu et al., "Face Alignment Across Large
Poses: A 3D Solution", CVPR 2016, as its authors' 3DDFA benchmark computes it), so that a 68-point figure
can be set beside the published large-pose results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_store.geometry import tight_box

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LARGE_POSE_EDGES",
    "YAW_EDGES",
    "auc",
    "ced_curve",
    "failure_rate",
    "grouped_summary",
    "large_pose_nme",
    "nme_per_sample",
    "radial_error",
    "summarise",
    "yaw_bin_labels",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.08, 0.10)
#: |yaw| bin edges in degrees for the per-pose breakdown
YAW_EDGES: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)
#: AFLW2000-3D's |yaw| bins: [0, 30], (30, 60], (60, 90] degrees (larger |yaw| joins the last)
LARGE_POSE_EDGES: tuple[float, ...] = (0.0, 30.0, 60.0, 90.0)


def _checked(
    pred: np.ndarray, gt: np.ndarray, normaliser: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pred``, ``gt`` as float64 ``[N, K, 2]`` and ``normaliser`` as positive ``[N]``, or ValueError."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    normaliser = np.asarray(normaliser, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected matching [N, K, 2] arrays, got {pred.shape} and {gt.shape}")
    if normaliser.shape != (pred.shape[0],):
        raise ValueError(f"normaliser must be [N], got {normaliser.shape}")
    if np.any(normaliser <= 0):
        raise ValueError("normaliser distances must be positive")
    return pred, gt, normaliser


def nme_per_sample(pred: np.ndarray, gt: np.ndarray, normaliser: np.ndarray) -> np.ndarray:
    """Normalised mean error per face.

    pred, gt: ``[N, K, 2]``; normaliser: ``[N]`` distances (same units). Returns ``[N]``.
    """
    pred, gt, normaliser = _checked(pred, gt, normaliser)
    dist = np.linalg.norm(pred - gt, axis=-1)  # (N, K)
    return np.asarray(dist.mean(axis=1) / normaliser)


def radial_error(
    pred: np.ndarray, gt: np.ndarray, normaliser: np.ndarray, points: slice | Sequence[int] = slice(None)
) -> np.ndarray:
    """Signed error of ``points`` along the outward direction, per face: for each chosen point the component
    of ``pred - gt`` along the unit vector from the centroid of all of ``gt``'s points to that point, averaged
    over the points and divided by ``normaliser``. Negative: the prediction lies inside the labelled outline
    (a shrunk shape); positive: outside. Tangential error (along the outline) does not count.

    pred, gt: ``[N, K, 2]``; normaliser: ``[N]``. Returns ``[N]``.
    """
    pred, gt, normaliser = _checked(pred, gt, normaliser)
    outward = gt - gt.mean(axis=1, keepdims=True)
    outward /= np.maximum(np.linalg.norm(outward, axis=-1, keepdims=True), 1e-12)
    along = ((pred - gt) * outward).sum(axis=-1)  # (N, K)
    return np.asarray(along[:, points].mean(axis=1) / normaliser)


def ced_curve(errors: np.ndarray, threshold: float, num: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """CED sampled at ``num`` points on ``[0, threshold]``: ``(x [num], fraction <= x [num])``."""
    e = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    x = np.linspace(0.0, threshold, num)
    if e.size == 0:
        return x, np.zeros_like(x)
    y = np.searchsorted(e, x, side="right") / e.size
    return x, y


def auc(errors: np.ndarray, threshold: float) -> float:
    """Exact area under the CED on ``[0, threshold]`` divided by ``threshold`` (in [0, 1]).

    For the empirical CDF F, ``int_0^T F(x) dx = mean_i max(0, T - e_i)``.
    errors: ``[N]``.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        return float("nan")
    return float(np.mean(np.clip(threshold - e, 0.0, None)) / threshold)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of faces with NME strictly above ``threshold``. errors: ``[N]``."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        return float("nan")
    return float(np.mean(e > threshold))


def _key(t: float) -> str:
    return f"{t:.2f}"


def summarise(errors: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """``{"n", "nme", "median", "auc": {thr: ..}, "failure_rate": {thr: ..}}`` for errors ``[N]``."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    return {
        "n": int(e.size),
        "nme": float(e.mean()) if e.size else float("nan"),
        "median": float(np.median(e)) if e.size else float("nan"),
        "auc": {_key(t): auc(e, t) for t in thresholds},
        "failure_rate": {_key(t): failure_rate(e, t) for t in thresholds},
    }


def yaw_bin_labels(yaw: np.ndarray, edges: Sequence[float] = YAW_EDGES) -> np.ndarray:
    """Label each face by its ``|yaw|`` bin, e.g. ``"|yaw| 15-30"``; NaN yaw -> ``"unknown"``.

    yaw: ``[N]`` degrees. The last bin includes its upper edge; larger |yaw| joins the last bin.
    """
    y = np.abs(np.asarray(yaw, dtype=np.float64).ravel())
    names = [f"|yaw| {edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)]
    idx = np.clip(np.searchsorted(np.asarray(edges), y, side="right") - 1, 0, len(names) - 1)
    labels = np.array([names[i] for i in idx], dtype=object)
    labels[np.isnan(y)] = "unknown"
    return labels


def grouped_summary(
    errors: np.ndarray,
    groups: Mapping[str, np.ndarray],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Overall summary plus one per label of every grouping.

    errors: ``[N]``; groups: grouping name -> labels ``[N]`` (e.g. ``{"subset": ..., "yaw": ...}``).
    Returns ``{"overall": summary, "<grouping>": {label: summary}}``.
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    out: dict[str, Any] = {"overall": summarise(e, thresholds)}
    for name, labels in groups.items():
        lab = np.asarray(labels, dtype=object).ravel()
        if lab.shape != e.shape:
            raise ValueError(f"grouping {name!r} has {lab.shape} labels for {e.shape} errors")
        out[name] = {str(v): summarise(e[lab == v], thresholds) for v in sorted({str(x) for x in lab})}
    return out


def large_pose_nme(pred: np.ndarray, gt: np.ndarray, yaw: np.ndarray) -> dict[str, Any]:
    """AFLW2000-3D's large-pose NME: per face the mean point error over the square root of the area of the
    labelled points' bounding box, averaged per |yaw| bin of ``LARGE_POSE_EDGES`` (each bin includes its
    upper edge; the first also 0), and "balanced": the mean of the three bins' means, so each pose range
    counts alike whatever the set's mix of poses (the figure that protocol reports as its mean).

    pred, gt: ``[N, K, 2]``; yaw: ``[N]`` degrees (faces with NaN yaw are left out). Returns
    ``{"|yaw| 0-30": {"n", "nme"}, ..., "balanced": float}``; a bin without faces has ``nme`` None and
    makes "balanced" None.
    """
    pred_, gt_, _ = _checked(pred, gt, np.ones(len(np.asarray(gt))))
    y = np.abs(np.asarray(yaw, dtype=np.float64).ravel())
    if y.shape != (len(gt_),):
        raise ValueError(f"yaw: one per face ({len(gt_)}), got shape {np.shape(yaw)}")
    box = tight_box(gt_)
    size = np.sqrt(np.maximum((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), 1e-12))
    per_face = np.linalg.norm(pred_ - gt_, axis=2).mean(axis=1) / size
    edges = LARGE_POSE_EDGES
    out: dict[str, Any] = {}
    last = len(edges) - 2
    for i in range(last + 1):
        above = y >= edges[0] if i == 0 else y > edges[i]
        sel = above & (y <= edges[i + 1]) if i < last else above  # NaN compares False: left out
        out[f"|yaw| {edges[i]:g}-{edges[i + 1]:g}"] = {
            "n": int(sel.sum()),
            "nme": float(per_face[sel].mean()) if sel.any() else None,
        }
    means = [b["nme"] for b in out.values()]
    out["balanced"] = None if None in means else float(np.mean(means))
    return out
