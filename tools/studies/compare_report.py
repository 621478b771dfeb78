"""The report of ``wingmark compare``, rebuilt from the runs' ``compare_eval.json`` files alone.

Nothing here trains or evaluates a network, so the report is rewritten in seconds from whatever runs
have finished; settings with fewer finished seeds than planned say "n of k seeds".
Writes ``comparison.json``, ``comparison.md`` (:mod:`tools.studies.compare_markdown`) and
``img/compare_*.png`` under ``docs``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.studies.compare_plan import EVAL_FILE, PlannedRun, run_dir
from tools.studies.compare_stats import (
    compare_pair,
    paper_claim,
    ranking,
    ranking_along_schedule,
    seed_stats,
    summarise_errors,
)

__all__ = ["LARGE_YAW", "PAPER_LOSS_ORDER", "collect", "write_report"]

PAPER_LOSS_ORDER = ("wing", "l1", "smooth_l1", "l2")
LARGE_YAW = 30.0


def _final(ev: Mapping[str, Any], set_name: str) -> list[float]:
    errs = ev["sets"][set_name]["errors"]
    return list(errs[f"stage{ev['stages']}"])


def _run_summary(ev: Mapping[str, Any], thresholds: Sequence[float]) -> dict[str, Any]:
    """Per set: the final stage's summary, |yaw| >= LARGE_YAW NME and (cascades) stage 1's NME."""
    out: dict[str, Any] = {"sets": {}}
    for name, s in ev["sets"].items():
        e = np.asarray(_final(ev, name))
        yaw = np.array([np.nan if v is None else abs(v) for v in s["yaw"]])
        big = yaw >= LARGE_YAW
        row = summarise_errors(e.tolist(), s["yaw"], thresholds)
        row["large_yaw"] = {"n": int(big.sum()), "nme": float(e[big].mean()) if big.any() else None}
        if ev["stages"] > 1:
            row["stage1_nme"] = float(np.mean(s["errors"]["stage1"]))
        out["sets"][name] = row
    m = ev.get("metrics", {})
    out["step_seconds"] = {k: v.get("step_seconds") for k, v in m.items()}
    out["val_curve"] = {k: v.get("val_curve") for k, v in m.items()}
    out["sessions"] = ev.get("sessions", [])
    return out


def collect(plan: Sequence[PlannedRun], out_root: Path, thresholds: Sequence[float]) -> dict[str, Any]:
    """Runs and settings from the evaluations that exist: per run its summaries, per setting the seed
    statistics (mean, min, max, std) of every figure, and the per-face errors pooled over seeds."""
    runs: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[float]]] = {}
    progress: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for run in plan:
        st = settings.setdefault(
            run.setting,
            {
                "group": run.group,
                "loss": dict(run.loss),
                "pdb": run.pdb,
                "stages": run.stages,
                "planned": 0,
                "done": [],
            },
        )
        st["planned"] += 1
        path = run_dir(out_root, run) / EVAL_FILE
        if not path.is_file():
            partial = _progress(run_dir(out_root, run))
            if partial:
                progress[run.key] = partial
            continue
        ev = json.loads(path.read_text(encoding="utf-8"))
        runs[run.key] = {"setting": run.setting, "seed": run.seed, **_run_summary(ev, thresholds)}
        st["done"].append(run.seed)
        for name in ev["sets"]:
            pool = pooled.setdefault(run.setting, {})
            pool.setdefault(name, []).extend(_final(ev, name))
            if ev["stages"] > 1:
                pool.setdefault(f"{name}:stage1", []).extend(ev["sets"][name]["errors"]["stage1"])
            yaw = np.array([np.nan if v is None else abs(v) for v in ev["sets"][name]["yaw"]])
            e = np.asarray(_final(ev, name))
            pool.setdefault(f"{name}:large_yaw", []).extend(e[yaw >= LARGE_YAW].tolist())
    for setting, st in settings.items():
        keys = [f"{setting}/s{s}" for s in st["done"]]
        sets: dict[str, Any] = {}
        for name in runs[keys[0]]["sets"] if keys else []:
            rows = [runs[k]["sets"][name] for k in keys]
            thr = [f"{t:.2f}" for t in thresholds]
            sets[name] = {
                "nme": seed_stats([r["nme"] for r in rows]),
                "large_yaw": seed_stats(
                    [r["large_yaw"]["nme"] for r in rows if r["large_yaw"]["nme"] is not None]
                ),
                "auc": {t: seed_stats([r["auc"][t] for r in rows]) for t in thr},
                "failure_rate": {t: seed_stats([r["failure_rate"][t] for r in rows]) for t in thr},
                "yaw_bins": {
                    b: {
                        **seed_stats([r["yaw_bins"][b]["nme"] for r in rows]),
                        "faces": rows[0]["yaw_bins"][b]["n"],
                    }
                    for b in rows[0]["yaw_bins"]
                },
            }
            if st["stages"] > 1:
                sets[name]["stage1_nme"] = seed_stats([r["stage1_nme"] for r in rows])
        st["sets"] = sets
        st["step_seconds"] = seed_stats(
            [sum(v or 0.0 for v in runs[k]["step_seconds"].values()) for k in keys]
        )
    return {"runs": runs, "settings": settings, "pooled": pooled, "in_progress": progress}


def _progress(folder: Path) -> dict[str, Any]:
    """An unfinished run's last logged step and validations per stage, from its ``metrics.jsonl``."""
    path = folder / "metrics.jsonl"
    out: dict[str, Any] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        st = out.setdefault(f"stage{row.get('stage', 1)}", {"step": 0, "val_curve": []})
        st["step"] = max(st["step"], int(row.get("step", 0)))
        if row.get("kind") == "val":
            st["val_curve"].append([int(row["step"]), float(row["val_nme"])])
    return out


def _verdicts(settings: Mapping[str, Any], set_names: Sequence[str]) -> dict[str, Any]:
    """Per set: the loss ranking and the paper's claim; PDB on vs off (all faces, turned faces); one stage
    vs two (the cascade runs' own stage 1 against their stage 2, same seeds)."""

    def stats(setting: str, name: str, part: str = "nme") -> dict[str, Any]:
        return settings[setting]["sets"].get(name, {}).get(part) or seed_stats([])

    out: dict[str, Any] = {}
    losses = [s for s in settings if settings[s]["group"] == "losses"]
    for name in set_names:
        by_loss = {settings[s]["loss"]["name"]: stats(s, name) for s in losses}
        out[name] = {
            "loss_ranking": ranking(by_loss),
            "paper_claim": paper_claim(by_loss, PAPER_LOSS_ORDER)
            if all(n in by_loss for n in PAPER_LOSS_ORDER)
            else None,
            "pdb": {
                part: compare_pair(stats("loss_wing", name, part), stats("pdb_off", name, part))
                for part in ("nme", "large_yaw")
            },
            "cascade": compare_pair(stats("cascade", name), stats("cascade", name, "stage1_nme")),
        }
    return out


def _schedule_ranking(plan: Sequence[PlannedRun], runs: Mapping[str, Any]) -> dict[str, str]:
    """The stage-1 losses ranked by validation NME at 50 %, 75 % and 100 % of their schedule."""
    curves: dict[str, list[Any]] = {}
    for run in plan:
        curve = runs.get(run.key, {}).get("val_curve", {}).get("stage1")
        if run.group == "losses" and curve:
            curves.setdefault(str(run.loss["name"]), []).append(curve)
    return ranking_along_schedule(curves)


def write_report(
    base: Mapping[str, Any],
    plan: Sequence[PlannedRun],
    out_root: Path,
    docs: Path,
    *,
    steps: int,
    stage2_steps: int,
    specs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Rewrite ``comparison.{json,md}`` and the plots from the finished runs; returns the JSON report
    (with a one-paragraph ``summary``)."""
    from tools.studies.compare_markdown import markdown
    from train.plots import plot_ced

    thresholds = [float(t) for t in base["eval"]["thresholds"]]
    got = collect(plan, out_root, thresholds)
    settings = got["settings"]
    done = [r.key for r in plan if r.key in got["runs"]]
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "budget": {
            "stage1_steps": steps,
            "stage2_steps": stage2_steps,
            "batch_size": base["stage1"]["batch_size"],
        },
        "base_config": base,
        "sets": {k: dict(v) for k, v in specs.items()},
        "thresholds": thresholds,
        "large_yaw_deg": LARGE_YAW,
        "paper_loss_order": " < ".join(PAPER_LOSS_ORDER),
        "done": done,
        "remaining": [r.key for r in plan if r.key not in got["runs"]],
        "settings": settings,
        "runs": got["runs"],
        "in_progress": got["in_progress"],
        "verdicts": _verdicts(settings, list(specs)),
        "schedule_ranking": _schedule_ranking(plan, got["runs"]),
    }
    report["summary"] = f"{len(done)} of {len(plan)} runs finished; " + "; ".join(
        f"{k}: {v['loss_ranking']}" for k, v in report["verdicts"].items()
    )
    docs.mkdir(parents=True, exist_ok=True)
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    tmp = docs / "comparison.json.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    tmp.replace(docs / "comparison.json")
    thr = max(thresholds)
    pooled = got["pooled"]

    images: list[str] = []  # the page links only the plots that have data

    def ced(curves: Mapping[str, Sequence[float]], file: str, title: str) -> None:
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in curves.items() if len(v)}
        (img / file).unlink(missing_ok=True)
        if arrays:
            xmax = max(thr, min(0.3, float(np.percentile(np.concatenate(list(arrays.values())), 90))))
            plot_ced(arrays, thr, img / file, title=title, xmax=xmax)
            images.append(file)

    for name in specs:
        tag = "synthetic" if name == "synthetic" else name
        losses = [s for s in settings if settings[s]["group"] == "losses"]
        ced(
            {s: pooled.get(s, {}).get(name, []) for s in losses},
            f"compare_ced_losses_{tag}.png",
            f"CNN-6 losses, {tag} (seeds pooled)",
        )
        ced(
            {
                "one stage (stage 1 of the cascade runs)": pooled.get("cascade", {}).get(
                    f"{name}:stage1", []
                ),
                "two stages": pooled.get("cascade", {}).get(name, []),
            },
            f"compare_ced_cascade_{tag}.png",
            f"One vs two stages, {tag} (seeds pooled)",
        )
    ced(
        {
            "PDB on, all": pooled.get("loss_wing", {}).get("synthetic", []),
            "PDB off, all": pooled.get("pdb_off", {}).get("synthetic", []),
            f"PDB on, |yaw|>={LARGE_YAW:g}": pooled.get("loss_wing", {}).get("synthetic:large_yaw", []),
            f"PDB off, |yaw|>={LARGE_YAW:g}": pooled.get("pdb_off", {}).get("synthetic:large_yaw", []),
        },
        "compare_ced_pdb_synthetic.png",
        "CNN-6 + Wing: PDB on/off, synthetic (seeds pooled)",
    )
    if _plot_val_curves(got["runs"], img / "compare_val_curves.png"):
        images.append("compare_val_curves.png")
    (docs / "comparison.md").write_text(markdown(report, images), encoding="utf-8")
    return report


def _plot_val_curves(runs: Mapping[str, Any], png: Path) -> bool:
    """Validation NME against step of every finished run's stage 1 (the budget check); False: none."""
    from train.plots import _pyplot

    curves = {k: r["val_curve"].get("stage1") for k, r in runs.items() if r["val_curve"].get("stage1")}
    png.unlink(missing_ok=True)
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, curve in curves.items():
        arr = np.asarray(curve, dtype=np.float64)
        ax.plot(arr[:, 0], 100 * arr[:, 1], label=key, linewidth=1)
    ax.set(xlabel="step", ylabel="validation NME (%)", title="Stage 1 validation curves", yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
