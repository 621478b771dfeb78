"""``wingmark data levers``: what each accuracy lever of the 3.0.0 recipe adds, alone and together.

Stage 1 of ``train/configs/cnn67_v3_ibug68.yaml`` (CNN-6 warm-started from the published 2.0.0 stage 1,
batch norms frozen) is fine-tuned for ``--steps`` steps once per variant, everything else fixed (seed,
optimiser, PDB, validation set, synthetic part), and each is evaluated on the synthetic test set (exact
labels) and on the real held-out faces (teacher labels: dlib's 68-point predictor where MediaPipe Face
Mesh agrees; 17 people never seen in training), both from the tight landmark box and from dlib HOG's box
sent as the client box:

- ``2.0.0-data``: the 2.0.0 training data (kept faces only, about 40 frames per filmed person) and
  augmentation: the control (what more steps alone give);
- ``+all-frames``: every labelled video frame (capped per person) beside the still photos, kept faces only;
- ``+point-weights``: as ``+all-frames`` plus the loosely agreed training faces, every point weighted by
  the teachers' agreement on it (this is the recipe's data);
- ``+box-aug``: the 2.0.0 data with the recipe's wide box perturbation (detector-sized boxes);
- ``all-levers``: the recipe's data and augmentation.

Writes ``data_ablation_levers_<scheme>.json``/``.md`` under ``--docs`` and a bar plot in ``--docs``/img.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import train
from tools.studies.ablation import _pct, _shown, _summary, _train, bar_plot

__all__ = ["LEVERS", "lever_configs", "main"]

CONFIGS = Path(train.__file__).resolve().parent / "configs"
LEVERS = ("2.0.0-data", "+all-frames", "+point-weights", "+box-aug", "all-levers")


def _slug(name: str) -> str:
    """A variant's folder name: no '+' and no '.' (config files are written as <folder>.yaml)."""
    return name.replace("+", "plus_").replace(".", "_")


def _parts(base: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    parts = {str(p.get("name")): dict(p) for p in base["data"]["train"]["parts"]}
    missing = {"synthetic", "real", "real_video"} - set(parts)
    if missing:
        raise ValueError(f"the base config's data.train mix lacks parts {sorted(missing)}")
    return parts


def lever_configs(base: Mapping[str, Any], steps: int, out_root: Path) -> dict[str, dict[str, Any]]:
    """One stage-1 config per lever variant (see the module docstring), ``steps`` steps each."""
    parts = _parts(base)
    synthetic, stills, video = parts["synthetic"], parts["real"], parts["real_video"]
    strict = {k: v for k, v in stills.items() if k not in {"kinds", "loose", "repeat", "name"}}
    # 2.0.0: kept faces of both kinds, ~40 frames per filmed person, repeated 10x
    v2_real = {**strict, "name": "real", "loose": False, "max_per_identity": 40, "repeat": 10}
    frames = [{**stills, "loose": False}, {**video, "loose": False}]
    data = {
        "2.0.0-data": [synthetic, v2_real],
        "+all-frames": [synthetic, *frames],
        "+point-weights": [synthetic, stills, video],
        "+box-aug": [synthetic, v2_real],
        "all-levers": [synthetic, stills, video],
    }
    wide = base["stage1"].get("augment")
    out: dict[str, dict[str, Any]] = {}
    for name, mix in data.items():
        cfg = copy.deepcopy(dict(base))
        cfg["name"] = f"{base['name']}_levers_{name}"
        cfg["out_dir"] = str(out_root / _slug(name))
        cfg["data"]["train"] = {"kind": "mix", "parts": copy.deepcopy(mix)}
        cfg["stage1"]["max_steps"] = steps
        cfg["stage1"]["augment"] = copy.deepcopy(wide) if name in {"+box-aug", "all-levers"} else None
        cfg["stage2"] = {"enabled": False}
        cfg["num_threads"] = 1
        out[name] = cfg
    return out


def summarise(out_root: Path, runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rows = {}
    for name, info in runs.items():
        run = out_root / _slug(name)
        rows[name] = {
            **info,
            "synthetic_test": _summary(run / "eval.json"),
            "real_test": _summary(run / "eval_real_test" / "eval.json"),
            "real_test_hog": _summary(run / "eval_real_test_hog" / "eval.json"),
        }
    return rows


def write_report(report: dict[str, Any], docs: Path) -> None:
    scheme, rows = report["scheme"], report["variants"]
    stem = f"data_ablation_levers_{scheme}"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# What each accuracy lever adds ({scheme}, stage 1)",
        "",
        f"Written by `wingmark data levers --scheme {scheme} --steps {report['steps']}`: CNN-6 stage 1 of "
        f"`{report['base_config']}`, warm-started from the published 2.0.0 stage 1, fine-tuned "
        f"{report['steps']} steps per variant (seed, optimiser, PDB, validation set fixed; one torch thread "
        "per run). NME in % (inter-ocular). Real held-out labels are teacher labels (dlib 68-point "
        "predictor, kept where MediaPipe Face Mesh agrees), not human annotation; 'HOG box' starts from "
        "dlib HOG's detection sent as the client box (no calibration), 'tight' from the tight label box.",
        "",
        "| variant | synthetic test | synthetic \\|yaw\\| 60-90 | real held-out, tight "
        "| real held-out, HOG box | HOG / tight | train time (min) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        syn, real, hog = r.get("synthetic_test"), r.get("real_test"), r.get("real_test_hog")
        yaw = (syn or {}).get("groups", {}).get("yaw", {})
        profile = next((v for k, v in yaw.items() if k.endswith("60-90")), None)  # "|yaw| 60-90"
        ratio = "-" if not (real and hog) else f"{hog['nme'] / real['nme']:.2f}"
        lines.append(
            f"| {name} | {_pct(syn and syn['nme'])} | {_pct(profile)} | {_pct(real and real['nme'])} | "
            f"{_pct(hog and hog['nme'])} | {ratio} | {(r.get('train_s') or 0) / 60:.1f} |"
        )
    lines += ["", f"![levers](img/{stem}.png)", ""]
    (docs / f"{stem}.md").write_text("\n".join(lines) + "\n")
    keys = (
        ("synthetic_test", "synthetic test"),
        ("real_test", "real, tight box"),
        ("real_test_hog", "real, HOG box"),
    )
    bar_plot(
        rows, docs / "img" / f"{stem}.png", f"Accuracy levers, {scheme} stage 1 (real labels: teachers)", keys
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wingmark data levers", description=__doc__.split("\n\n")[0])
    p.add_argument("--scheme", default="ibug68", choices=("ibug68",))
    p.add_argument("--config", type=Path, help="base recipe (default train/configs/cnn67_v3_<scheme>.yaml)")
    p.add_argument("--steps", type=int, default=1000, help="stage-1 fine-tuning steps per variant")
    p.add_argument("--variants", default=",".join(LEVERS), help="comma list of " + ", ".join(LEVERS))
    p.add_argument("--out", type=Path, default=Path("runs/levers"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs")
    args = p.parse_args(argv)
    base_path = args.config or CONFIGS / f"cnn67_v3_{args.scheme}.yaml"
    base = yaml.safe_load(base_path.read_text())
    out_root = args.out / args.scheme
    wanted = [v for v in args.variants.split(",") if v]
    unknown = set(wanted) - set(LEVERS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    configs = {k: v for k, v in lever_configs(base, args.steps, out_root).items() if k in wanted}
    prev = args.docs / f"data_ablation_levers_{args.scheme}.json"
    earlier = json.loads(prev.read_text())["variants"] if prev.exists() else {}
    runs: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    out_root.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs.items():  # one at a time: the CPU is shared with the recipe's own training
        done = Path(cfg["out_dir"]) / "eval_real_test_hog" / "eval.json"
        if args.report_only or done.exists():  # finished runs are not redone (resumable across sessions)
            runs[name] = {f: (earlier.get(name) or {}).get(f) for f in ("rc", "train_s", "log")}
            continue
        cfg["resume"] = True
        runs[name] = _train(name, cfg, out_root / f"{_slug(name)}.log")
    report = {
        "scheme": args.scheme,
        "base_config": _shown(base_path),
        "steps": args.steps,
        "wall_s": round(time.monotonic() - started, 1),
        "variants": summarise(out_root, runs),
    }
    write_report(report, args.docs)
    print(f"[levers] wrote {args.docs / f'data_ablation_levers_{args.scheme}.md'}", flush=True)
    return 0 if all((r.get("rc") or 0) == 0 for r in runs.values()) else 1
