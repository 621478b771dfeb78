"""``wingmark data ablation``: what each training data source adds, under one fixed budget.

Stage 1 (CNN-6, Wing, PDB, the paper's augmentation) of the 2.0.0 recipe
(``train/configs/cnn67_mixed_<scheme>.yaml``) is trained once per variant of its training data, with
everything else fixed (seed, steps, batch, optimiser, validation set), and each is evaluated on the
synthetic test set (exact labels) and the real held-out set (teacher labels: dlib's 68-point
predictor where MediaPipe Face Mesh agrees; identities never seen in training):

- ``synthetic``: synthetic faces only (pose coverage, exact labels);
- ``real``: the real training faces only (repeated as in the recipe);
- ``both``: the recipe's mix;
- ``both+scan``: the mix plus renders of menpo3d's textured face scan (``kind: scan``), where available;
- ``both+repose``: the mix plus re-posed real training faces (``kind: repose``), where the meshes of
  ``wingmark data repose`` exist.

Variants run as separate ``wingmark train`` processes, ``--jobs`` at a time (one torch thread each).
Writes ``data_ablation_<scheme>.json`` and ``.md`` under ``--docs`` and a bar plot in ``--docs``/img.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

import train

__all__ = ["VARIANTS", "main", "summarise", "variant_configs"]

CONFIGS = Path(train.__file__).resolve().parent / "configs"
VARIANTS = ("synthetic", "real", "both", "both+scan", "both+skin", "both+repose")


def _part(parts: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [p for p in parts if p.get("name") == name]
    if not found:
        raise ValueError(f"the base config's data.train mix has no part named {name!r}")
    return found[0]


def variant_configs(
    base: Mapping[str, Any],
    steps: int,
    out_root: Path,
    scan: Mapping[str, Any] | None = None,
    repose: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """One config per variant: ``base`` (a recipe whose ``data.train`` is a mix with ``synthetic``
    and ``real`` parts) as stage 1 only, for ``steps`` steps, with that variant's training data."""
    train = base["data"]["train"]
    if train.get("kind") != "mix":
        raise ValueError("the base config's data.train must be a mix of synthetic and real parts")
    synthetic, real = _part(train["parts"], "synthetic"), _part(train["parts"], "real")
    data: dict[str, dict[str, Any]] = {
        "synthetic": dict(synthetic),
        "real": dict(real),
        "both": {"kind": "mix", "parts": [synthetic, real]},
    }
    # the synthetic faces with real cheek-skin patches from the real cache's train split
    skinned = {**synthetic, "real_skin": {"root": real.get("root", "cache/real")}}
    data["both+skin"] = {"kind": "mix", "parts": [skinned, real]}
    if scan is not None:
        data["both+scan"] = {"kind": "mix", "parts": [synthetic, real, {"name": "scan", **scan}]}
    if repose is not None:
        data["both+repose"] = {"kind": "mix", "parts": [synthetic, real, {"name": "repose", **repose}]}
    out = {}
    for name, spec in data.items():
        cfg = copy.deepcopy(dict(base))
        cfg["name"] = f"{base['name']}_ablation_{name}"
        cfg["out_dir"] = str(out_root / name.replace("+", "_"))
        cfg["data"]["train"] = copy.deepcopy(spec)
        cfg["stage1"]["max_steps"] = steps
        cfg["stage2"] = {"enabled": False}
        cfg["num_threads"] = 1
        out[name] = cfg
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies under it (reports stay portable)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _train(name: str, cfg: dict[str, Any], log: Path) -> dict[str, Any]:
    path = Path(cfg["out_dir"]).with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.call(
            [sys.executable, "-m", "train.cli", str(path)], stdout=f, stderr=subprocess.STDOUT
        )
    took = time.monotonic() - t0
    print(f"[ablation] {name}: rc {rc} in {took / 60:.1f} min (log {log})", flush=True)
    return {"rc": rc, "train_s": round(took, 1), "log": str(log)}


def _summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    s1 = rep["stage1"]
    return {
        "nme": s1["overall"]["nme"],
        "n": s1["overall"].get("n"),
        "groups": {
            g: {k: v["nme"] for k, v in s1[g].items()} for g in ("subset", "yaw", "source") if g in s1
        },
    }


def summarise(out_root: Path, runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per variant: stage-1 NME on the synthetic test set and the real held-out set (with the
    per-group breakdowns of their eval.json), and the training time."""
    rows = {}
    for name, info in runs.items():
        run = out_root / name.replace("+", "_")
        rows[name] = {
            **info,
            "synthetic_test": _summary(run / "eval.json"),
            "real_test": _summary(run / "eval_real_test" / "eval.json"),
        }
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def write_report(report: dict[str, Any], docs: Path) -> None:
    scheme, rows = report["scheme"], report["variants"]
    stem = f"data_ablation_{scheme}"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# What each data source adds ({scheme}, stage 1)",
        "",
        f"Written by `wingmark data ablation --scheme {scheme} --steps {report['steps']}`: CNN-6 stage 1 of "
        f"`{report['base_config']}` trained {report['steps']} steps per variant (seed, optimiser, "
        "augmentation, PDB and validation set fixed; one torch thread per run, "
        f"{report['jobs']} runs at a time), evaluated from the tight box. NME in % (normaliser: the "
        "scheme's). Real held-out labels are teacher labels (dlib 68-point predictor, kept where MediaPipe "
        "Face Mesh agrees), not ground truth.",
        "",
        "| variant | synthetic test NME | real held-out NME | train time (min) |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        syn, real = r.get("synthetic_test"), r.get("real_test")
        lines.append(
            f"| {name} | {_pct(syn and syn['nme'])} | {_pct(real and real['nme'])} | "
            f"{r.get('train_s', 0) / 60:.1f} |"
        )
    for group, title in (("yaw", "synthetic test, per |yaw| bin"), ("source", "real held-out, per source")):
        key = "synthetic_test" if group == "yaw" else "real_test"
        cols = sorted(
            {c for r in rows.values() for c in ((r.get(key) or {}).get("groups", {}).get(group, {}))}
        )
        if not cols:
            continue
        lines += ["", f"NME % {title}:", "", "| variant | " + " | ".join(cols) + " |"]
        lines.append("| --- " * (len(cols) + 1) + "|")
        for name, r in rows.items():
            g = (r.get(key) or {}).get("groups", {}).get(group, {})
            lines.append(f"| {name} | " + " | ".join(_pct(g.get(c)) for c in cols) + " |")
    lines += ["", f"![ablation](img/{stem}.png)", ""]
    (docs / f"{stem}.md").write_text("\n".join(lines) + "\n")
    bar_plot(rows, docs / "img" / f"{stem}.png", f"Training data sources, {scheme} (real labels: teachers)")


def bar_plot(
    rows: Mapping[str, Any],
    png: Path,
    title: str,
    keys: Sequence[tuple[str, str]] = (("synthetic_test", "synthetic test"), ("real_test", "real held-out")),
) -> None:
    """Grouped bars of each variant's stage-1 NME (%), one bar per ``(row key, legend label)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rows)
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(names)), 3.6), dpi=110)
    for k, (key, label) in enumerate(keys):
        vals = [100 * ((rows[n].get(key) or {}).get("nme") or np.nan) for n in names]
        ax.bar(x + (k - (len(keys) - 1) / 2) * width, vals, width, label=label)
    ax.set_xticks(x, names)
    ax.set_ylabel("stage-1 NME (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wingmark data ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--scheme", default="ibug68", choices=("ibug68", "aflw19"))
    p.add_argument(
        "--config", type=Path, help="base recipe (default train/configs/cnn67_mixed_<scheme>.yaml)"
    )
    p.add_argument("--steps", type=int, default=1600, help="stage-1 steps per variant")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ", ".join(VARIANTS))
    p.add_argument("--scan-num", type=int, default=1000, help="scan renders in the both+scan variant")
    p.add_argument(
        "--repose-faces", type=int, default=600, help="re-posed renders in both+repose (1 per face)"
    )
    p.add_argument("--repose-repeat", type=int, default=4, help="repeat of the re-posed part in the mix")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs")
    args = p.parse_args(argv)
    base_path = args.config or CONFIGS / f"cnn67_mixed_{args.scheme}.yaml"
    base = yaml.safe_load(base_path.read_text())
    out_root = args.out / args.scheme
    wanted = [v for v in args.variants.split(",") if v]
    scan = None
    if "both+scan" in wanted:
        try:
            import train.data.scan  # noqa: F401
        except ImportError:
            print("[ablation] no scan renderer (train.data.scan) here: both+scan skipped", flush=True)
            wanted.remove("both+scan")
        else:
            scan = {
                "kind": "scan",
                "num": args.scan_num,
                "seed": 11,
                "image_size": 256,
                "cache_dir": "cache/scan",
            }
    repose = None
    if "both+repose" in wanted:
        real_part = _part(base["data"]["train"]["parts"], "real")
        real_root = Path(real_part.get("root", "cache/real"))
        mesh3d = real_root.parent / "repose" / "mesh3d.npz"
        if not mesh3d.is_file():
            print(f"[ablation] no {mesh3d} (run 'wingmark data repose'): both+repose skipped", flush=True)
            wanted.remove("both+repose")
        else:
            repose = {
                "kind": "repose",
                "root": str(real_root),
                "per_face": 1,
                "max_faces": args.repose_faces,
                "seed": 13,
                "image_size": 256,
                "cache_dir": str(real_root.parent / "repose" / "renders"),
                "repeat": args.repose_repeat,
            }
    configs = {
        k: v for k, v in variant_configs(base, args.steps, out_root, scan, repose).items() if k in wanted
    }
    started = time.monotonic()
    prev = args.docs / f"data_ablation_{args.scheme}.json"
    jobs: int | str = args.jobs
    if args.report_only:
        runs = json.loads(prev.read_text())["variants"] if prev.exists() else {k: {} for k in configs}
        runs = {k: {f: v.get(f) for f in ("rc", "train_s", "log")} for k, v in runs.items()}
    else:
        out_root.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {
                k: pool.submit(_train, k, cfg, out_root / f"{k.replace('+', '_')}.log")
                for k, cfg in configs.items()
            }
            runs = {k: f.result() for k, f in futures.items()}
        if prev.exists():  # variants not rerun keep their finished runs in the report
            earlier = json.loads(prev.read_text())
            if earlier.get("steps") == args.steps:
                kept = {k: v for k, v in earlier["variants"].items() if k not in runs}
                if kept:
                    jobs = f"{earlier.get('jobs')} ({', '.join(kept)}) and {args.jobs} ({', '.join(runs)})"
                runs = {k: {f: v.get(f) for f in ("rc", "train_s", "log")} for k, v in kept.items()} | runs
                order = {k: i for i, k in enumerate(VARIANTS)}
                runs = {k: runs[k] for k in sorted(runs, key=lambda k: order.get(k, len(order)))}
    report = {
        "scheme": args.scheme,
        "base_config": _shown(base_path),
        "steps": args.steps,
        "jobs": jobs,
        "wall_s": round(time.monotonic() - started, 1),
        "variants": summarise(out_root, runs),
    }
    write_report(report, args.docs)
    print(f"[ablation] wrote {args.docs / f'data_ablation_{args.scheme}.md'}", flush=True)
    return 0 if all(r.get("rc", 0) == 0 for r in runs.values()) else 1
