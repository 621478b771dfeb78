"""``wingmark pose-eval``: head-pose error on synthetic faces whose true pose is known.

Faces are rendered by :func:`train.data.render.render_face` with yaw uniform in [-yaw_max, yaw_max]
(pitch and roll from :class:`train.data.synthetic.PoseDistribution`'s defaults), with the same
per-sample random streams as :class:`~train.data.synthetic.SyntheticFaces`. For each face and scheme,
:func:`model_store.pose.estimate_pose` runs twice:

- on the renderer's exact landmarks: the error of the solver alone (the mean face against each face's
  own identity, expression and camera, and the assumed focal length max(w, h));
- on the default model's landmarks, run as the service runs it (``runtime.Landmarker``, ONNX
  Runtime, the face box given as a client box: the tight box of the true landmarks): end to end.

The labels are the renderer's own pose parameters (exact, not a teacher's). Writes a JSON report
(mean absolute error per angle, overall and per yaw bin) and a PNG of the errors against the yaw.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.pose import FOCAL_FACTOR, estimate_pose
from model_store.store import DEFAULT_MODELS, ModelStore, default_root
from tools.studies import write_json

__all__ = ["evaluate", "main"]

ANGLES = ("yaw", "pitch", "roll")


def _summary(errors: np.ndarray, yaw: np.ndarray, bins: list[float]) -> dict[str, Any]:
    """errors [N, 3] signed (estimate - truth), yaw [N] true yaw -> MAE per angle, overall and by |yaw|."""
    a = np.abs(errors)
    out: dict[str, Any] = {
        "mae_deg": {k: round(float(a[:, i].mean()), 2) for i, k in enumerate(ANGLES)},
        "median_abs_deg": {k: round(float(np.median(a[:, i])), 2) for i, k in enumerate(ANGLES)},
        "bias_deg": {k: round(float(errors[:, i].mean()), 2) for i, k in enumerate(ANGLES)},
        "p95_abs_deg": {k: round(float(np.percentile(a[:, i], 95)), 2) for i, k in enumerate(ANGLES)},
        "by_abs_yaw": [],
    }
    for lo, hi in itertools.pairwise(bins):
        m = (np.abs(yaw) >= lo) & (np.abs(yaw) < hi if hi < bins[-1] else np.abs(yaw) <= hi)
        if m.any():
            out["by_abs_yaw"].append(
                {"range": [lo, hi], "n": int(m.sum())}
                | {k: round(float(a[m, i].mean()), 2) for i, k in enumerate(ANGLES)}
            )
    return out


def evaluate(
    num: int = 300,
    seed: int = 2024,
    image_size: int = 256,
    yaw_max: float = 60.0,
    model_root: Path | None = None,
    with_models: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The report (see the module docstring); ``with_models=False`` measures the solver only."""
    from train.data.render import render_face
    from train.data.synthetic import PoseDistribution

    dist = PoseDistribution.uniform_yaw(yaw_max)
    cascades: dict[str, Any] = {}
    if with_models:
        from runtime import Landmarker

        store = ModelStore(model_root or default_root())
        for scheme, name in DEFAULT_MODELS.items():
            cascades[scheme] = Landmarker.from_store(
                name, store=store, detector=None, max_batch_size=1, verify=False
            )
    truth, poses = [], []
    solver: dict[str, list[list[float]]] = {"ibug68": [], "aflw19": []}
    model: dict[str, list[list[float]]] = {"ibug68": [], "aflw19": []}
    model_names = {s: f"{c.model.manifest.name}@{c.model.manifest.version}" for s, c in cascades.items()}
    t0 = time.monotonic()
    for i in range(num):
        rng = np.random.default_rng([seed, i])  # the SyntheticFaces recipe: pose first, then the face
        pose = dist.sample(rng)
        face = render_face(rng, image_size, *pose, geometry_only=not with_models)
        poses.append(pose)
        for scheme, pts in (("ibug68", face.points68), ("aflw19", face.points19)):
            est = estimate_pose(pts, scheme, image_size, image_size)
            solver[scheme].append([est.yaw, est.pitch, est.roll])
            if scheme in cascades:
                pred = cascades[scheme].landmarks([face.image], tight_box(pts)[None])[-1][0]
                est = estimate_pose(pred, scheme, image_size, image_size)
                model[scheme].append([est.yaw, est.pitch, est.roll])
        truth.append(pose)
        if progress and ((i + 1) % 50 == 0 or i + 1 == num):
            print(
                f"pose-eval: {i + 1}/{num} faces, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True
            )
    true = np.asarray(truth)
    bins = [0.0, 15.0, 30.0, 45.0, yaw_max]
    report: dict[str, Any] = {
        "what": "head-pose error (degrees) on synthetic faces of known pose; labels are the renderer's",
        "faces": num,
        "seed": seed,
        "image_size": image_size,
        "pose_distribution": {"yaw": f"uniform in [-{yaw_max}, {yaw_max}]", "pitch_std": dist.pitch_std,
                              "roll_std": dist.roll_std, "pitch_max": dist.pitch_max,
                              "roll_max": dist.roll_max},
        "camera": f"pinhole, f = {FOCAL_FACTOR} * max(w, h), principal point at the image centre",
        "true_range_deg": {k: [round(float(true[:, j].min()), 1), round(float(true[:, j].max()), 1)]
                           for j, k in enumerate(ANGLES)},
        "solver_only": {s: _summary(np.asarray(v) - true, true[:, 0], bins) for s, v in solver.items()},
    }  # fmt: skip
    if cascades:
        report["end_to_end"] = {
            s: {"model": model_names[s], "box": "client box: the tight box of the true landmarks"}
            | _summary(np.asarray(v) - true, true[:, 0], bins)
            for s, v in model.items()
        }
    report["_errors"] = {  # signed errors for the plot (dropped from the JSON)
        "true_yaw": true[:, 0],
        **{f"solver/{s}": np.asarray(v) - true for s, v in solver.items()},
        **{f"model/{s}": np.asarray(v) - true for s, v in model.items() if v},
    }
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = report["_errors"]
    yaw = err["true_yaw"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for j, angle in enumerate(ANGLES):
        ax = axes[j]
        for key, colour in (("model/ibug68", "tab:orange"), ("solver/ibug68", "tab:blue")):
            if key in err:
                label = "model landmarks" if key.startswith("model") else "true landmarks (solver only)"
                ax.scatter(yaw, err[key][:, j], s=6, alpha=0.5, color=colour, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{angle} error, ibug68")
        ax.set_xlabel("true yaw (degrees)")
    axes[0].set_ylabel("estimate - truth (degrees)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wingmark pose-eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=300, help="faces to render (default 300)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--yaw-max", type=float, default=60.0)
    parser.add_argument(
        "--model-root", type=Path, default=None, help="model store (default: the embedded one)"
    )
    parser.add_argument("--solver-only", action="store_true", help="skip the models (true landmarks only)")
    parser.add_argument("--out", type=Path, default=Path("docs/pose_eval.json"), help="JSON report")
    parser.add_argument("--plot", default="docs/img/pose_eval.png", help="PNG ('' for none)")
    args = parser.parse_args(argv)
    report = evaluate(
        args.num, args.seed, args.image_size, args.yaw_max, args.model_root, not args.solver_only
    )
    errors = report.pop("_errors")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out)
    if args.plot:
        _plot(report | {"_errors": errors}, Path(args.plot))
    for kind in ("solver_only", "end_to_end"):
        for scheme, summary in report.get(kind, {}).items():
            mae = summary["mae_deg"]
            angles = ", ".join(f"{k} {mae[k]:.2f}" for k in ANGLES)
            print(f"{kind:12s} {scheme}: MAE (degrees) {angles}")
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
