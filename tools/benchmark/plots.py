"""The PNG plots of ``wingmark benchmark``: bare models by batch, service throughput by concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def write_plots(report: dict[str, Any], img_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    img_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for what in ("stage1", "stage2", "cascade"):
        for threads, spinning in ((1, True), (2, True), (2, False)):
            rows = [
                r
                for r in report["bare"]["rows"]
                if r["what"] == what and r["threads"] == threads and r["spinning"] == spinning
            ]
            if rows:
                ax.plot(
                    [r["batch"] for r in rows],
                    [r["faces_per_s"]["median"] for r in rows],
                    marker="o",
                    label=f"{what}, {threads} thr{'' if spinning else ' no-spin'}",
                )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch",
        ylabel="faces/s (median)",
        title="ONNX Runtime, inference only",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(img_dir / "benchmarks_bare.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    every = report["service"]["runs"]
    runs = [r for r in every if r.get("image", "512") == "512"]
    for label in report.get("images", {}):
        if label != "512":
            rs = [r for r in every if r.get("image") == label and r["config"] == "default"]
            ax.plot(
                [r["concurrency"] for r in rs],
                [r["faces_per_s"]["median"] for r in rs],
                marker="o",
                ls="--",
                label=f"service, client, {label}",
            )
        if "inprocess" in report:
            e2e = report["inprocess"][label]["e2e"]["faces_per_s"]["median"]
            ax.axhline(
                e2e,
                ls="-.",
                lw=1,
                c="grey" if label == "512" else "tab:brown",
                label=f"in-process end to end, {label}",
            )
    for mode in ("client", "detect"):
        rs = [r for r in runs if r["config"] == "default" and r["mode"] == mode]
        ax.plot(
            [r["concurrency"] for r in rs],
            [r["faces_per_s"]["median"] for r in rs],
            marker="o",
            label=f"service, {mode}",
        )
    for config, marker in (("batching_off", "x"), ("ort_1_thread", "d"), ("before", "s")):
        rs = [r for r in runs if r["config"] == config]
        ax.scatter(
            [r["concurrency"] for r in rs],
            [r["faces_per_s"]["median"] for r in rs],
            marker=marker,
            label=f"{config} ({', '.join(r['mode'] for r in rs)})",
        )
    best = report["bare"]["best_cascade"]["faces_per_s"]["median"]
    ax.axhline(best, ls="--", c="k", lw=1, label="bare cascade, best batch")
    ax.axhline(0.8 * best, ls=":", c="k", lw=1, label="0.8x bare")
    n = report["peers"].get("naive", {})
    if n.get("available"):
        ax.plot(
            [r["concurrency"] for r in n["runs"]],
            [r["faces_per_s"]["median"] for r in n["runs"]],
            marker="^",
            label="naive FastAPI",
        )
    ax.set(xscale="log", xlabel="concurrent clients", ylabel="faces/s (median)", title="Service throughput")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(img_dir / "benchmarks_service.png", dpi=110)
    plt.close(fig)
    return ["benchmarks_bare.png", "benchmarks_service.png"]
