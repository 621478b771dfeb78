"""Seed statistics of ``wingmark compare``: a setting's mean and spread, ties, rankings, verdicts.

A setting has one NME per finished seed. Two settings are told apart only when the difference of their
means is larger than the seed spread (max - min over seeds) of either; otherwise they are a tie. With
fewer than two seeds on either side the spread is unknown and the comparison is "unresolved".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "compare_pair",
    "curve_at",
    "paper_claim",
    "ranking",
    "ranking_along_schedule",
    "seed_stats",
    "summarise_errors",
]


def summarise_errors(
    errors: Sequence[float], yaw: Sequence[float | None], thresholds: Sequence[float]
) -> dict[str, Any]:
    """One run on one set: overall summary (NME, AUC, failure rate) and per-|yaw|-bin NME.

    errors: per-face NME ``[N]`` (fractions); yaw: ``[N]`` degrees, None where unknown.
    """
    from train.metrics import summarise, yaw_bin_labels

    e = np.asarray(errors, dtype=np.float64)
    y = np.array([np.nan if v is None else float(v) for v in yaw], dtype=np.float64)
    labels = yaw_bin_labels(y)
    bins = {
        str(b): {"n": int((labels == b).sum()), "nme": float(e[labels == b].mean())}
        for b in sorted(set(labels.tolist()))
    }
    return {**summarise(e, thresholds), "yaw_bins": bins}


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``{"n", "mean", "min", "max", "spread" (max - min), "std" (ddof 1; None under 2 seeds), "values"}``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "min": None, "max": None, "spread": None, "std": None, "values": []}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "spread": float(v.max() - v.min()) if v.size > 1 else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "values": [float(x) for x in v],
    }


def compare_pair(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """``"<"`` (a better: lower NME), ``">"``, ``"tie"`` or ``"unresolved"`` for two :func:`seed_stats`.

    A difference of means no larger than either setting's seed spread is a tie.
    """
    if not a["n"] or not b["n"]:
        return "unresolved"
    if a["n"] < 2 or b["n"] < 2:
        return "unresolved"
    diff = float(a["mean"]) - float(b["mean"])
    if abs(diff) <= max(float(a["spread"]), float(b["spread"])):
        return "tie"
    return "<" if diff < 0 else ">"


def ranking(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """Settings best first by mean, joined by ``<`` where the neighbours differ beyond the seed spread,
    ``≈`` where they tie and ``?`` where a side has under two seeds; settings without runs are left out."""
    names = sorted((n for n in stats if stats[n]["n"]), key=lambda n: float(stats[n]["mean"]))
    if not names:
        return "(no finished runs)"
    out = names[0]
    for prev, name in itertools.pairwise(names):
        rel = compare_pair(stats[prev], stats[name])
        out += {"<": " < ", "tie": " ≈ ", "unresolved": " ? "}.get(rel, " > ") + name
    return out


def paper_claim(stats: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> dict[str, Any]:
    """Check a claimed order (best first, e.g. wing, l1, smooth_l1, l2) pair by neighbouring pair.

    Verdict: ``holds`` (every pair in the claimed direction beyond the seed spread), ``contradicted``
    (some pair the other way beyond the spread), ``tie`` (no pair contradicted, some tied) or
    ``unresolved`` (some pair lacks seeds and none is contradicted).
    """
    pairs = []
    for a, b in itertools.pairwise(order):
        rel = compare_pair(stats[a], stats[b])
        diff = (
            None
            if not (stats[a]["n"] and stats[b]["n"])
            else float(stats[a]["mean"]) - float(stats[b]["mean"])
        )
        spread = [stats[a]["spread"], stats[b]["spread"]]
        pairs.append({"better": a, "worse": b, "relation": rel, "diff": diff, "spreads": spread})
    rels = {p["relation"] for p in pairs}
    if ">" in rels:
        verdict = "contradicted"
    elif rels == {"<"}:
        verdict = "holds"
    elif "unresolved" in rels:
        verdict = "unresolved"
    else:
        verdict = "tie"
    return {"order": list(order), "verdict": verdict, "pairs": pairs}


def curve_at(curve: Sequence[Sequence[float]], frac: float) -> float:
    """The value of a validation curve ``[[step, nme], ...]`` at the logged step nearest ``frac`` of its
    last step."""
    last = curve[-1][0]
    return float(min(curve, key=lambda p: abs(p[0] - frac * last))[1])


def ranking_along_schedule(
    curves: Mapping[str, Sequence[Sequence[Sequence[float]]]], fractions: Sequence[float] = (0.5, 0.75, 1.0)
) -> dict[str, str]:
    """Settings ranked (:func:`ranking`, ties by seed spread) by validation NME at points of the schedule.

    curves: per setting, one validation curve ``[[step, nme], ...]`` per finished seed. With a decaying
    learning rate every curve still drops in the last quarter; a ranking that stays the same from the
    middle of the schedule to its end says the comparison does not hinge on the budget.
    Returns ``{"0.5": "l1 < wing", ...}``, keyed by the fraction.
    """
    return {
        f"{f:g}": ranking({name: seed_stats([curve_at(c, f) for c in cs]) for name, cs in curves.items()})
        for f in fractions
    }
