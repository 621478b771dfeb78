"""``wingmark train`` and ``wingmark eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["eval_main", "train_main"]


def train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark train",
        description="Train a landmark model (one or two stages) from a YAML config. "
        "Multi-GPU: torchrun --nproc_per_node=N -m train.cli CONFIG ...",
    )
    parser.add_argument("config", help="YAML config, e.g. train/configs/cnn67_synth_ibug68.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides with dotted keys, e.g. stage1.epochs=2"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from train.config import load_config
    from train.loop import train

    try:
        cfg = load_config(args.config, args.overrides)
    except (KeyError, ValueError, OSError) as exc:
        print(f"wingmark train: {exc}", file=sys.stderr)
        return 2
    report = train(cfg, progress=not args.no_progress)
    if report:
        final = report["final"]
        print(
            f"{cfg['name']}: test NME {100 * final['nme']:.2f}% "
            + " ".join(f"AUC@{t} {v:.3f}" for t, v in final["auc"].items())
            + " "
            + " ".join(f"FR@{t} {100 * v:.1f}%" for t, v in final["failure_rate"].items())
            + f" -> {Path(cfg['out_dir']) / 'eval.json'}"
        )
    return 0


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark eval",
        description="Evaluate a training run's checkpoints: NME, CED (PNG), AUC and failure rate, "
        "overall, per subset and per |yaw| bin; writes eval.json and ced.png.",
    )
    parser.add_argument("run_dir", help="training output directory (holds stage1/ and optionally stage2/)")
    parser.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint to evaluate")
    parser.add_argument("--out", default=None, help="output directory (default: RUN_DIR)")
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=None, help="NME thresholds (default 0.08 0.10)"
    )
    parser.add_argument(
        "--data",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dataset spec replacing the config's test set, e.g. kind=synthetic num=500 seed=7",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import yaml

    from train.loop import evaluate_run

    spec = None
    if args.data:
        spec = {}
        for item in args.data:
            key, _, value = item.partition("=")
            spec[key] = yaml.safe_load(value)
    try:
        report = evaluate_run(
            args.run_dir,
            data_spec=spec,
            which=args.which,
            thresholds=args.thresholds,
            out_dir=args.out,
            device=args.device,
        )
    except FileNotFoundError as exc:
        print(f"wingmark eval: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"final": report["final"]}, indent=2))
    return 0


if __name__ == "__main__":  # torchrun -m train.cli CONFIG [overrides]
    raise SystemExit(train_main(sys.argv[1:]))
