"""PNG plots: training curves from metrics.jsonl and cumulative error distributions (matplotlib, Agg)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from train.metrics import auc, ced_curve

__all__ = ["plot_ced", "plot_curves"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_path: str | Path, png_path: str | Path) -> None:
    """Training loss and validation NME per stage against step, from a metrics.jsonl file."""
    rows = [
        json.loads(line)
        for line in Path(metrics_path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    stages = sorted({int(r["stage"]) for r in rows})
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for s in stages:
        tr = [r for r in rows if r["stage"] == s and r["kind"] == "train"]
        va = [r for r in rows if r["stage"] == s and r["kind"] == "val"]
        if tr:
            axes[0].plot([r["step"] for r in tr], [r["loss"] for r in tr], label=f"stage {s}")
        if va:
            axes[1].plot(
                [r["step"] for r in va], [100 * r["val_nme"] for r in va], marker="o", label=f"stage {s}"
            )
    axes[0].set(xlabel="step", ylabel="training loss", title="loss", yscale="log")
    axes[1].set(xlabel="step", ylabel="validation NME (%)", title="validation NME")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def plot_ced(
    errors: Mapping[str, np.ndarray],
    threshold: float,
    png_path: str | Path,
    title: str = "CED",
    xmax: float | None = None,
) -> None:
    """One CED curve per label (errors ``[N]`` NME fractions) on ``[0, xmax]`` (default: the
    threshold); the legend gives the mean NME and the AUC at ``threshold``."""
    plt = _pyplot()
    xmax = threshold if xmax is None else xmax
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, e in errors.items():
        x, y = ced_curve(e, xmax, num=401)
        mean = 100 * float(np.mean(e))
        ax.plot(100 * x, y, label=f"{label}: NME {mean:.2f}%, AUC@{threshold:g} {auc(e, threshold):.3f}")
    ax.set(xlabel="NME (%)", ylabel="fraction of faces", title=title, xlim=(0, 100 * xmax), ylim=(0, 1))
    if xmax > threshold:
        ax.axvline(100 * threshold, color="grey", linestyle=":", linewidth=1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
