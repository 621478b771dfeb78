"""A pose-gated cascade, measured offline: one model for near-frontal faces, another for turned ones.

Every candidate trained for issue 18 that gains on the synthetic test set's turned faces loses a little on
the real held-out photos, which are mostly near-frontal. This study asks whether choosing the model per face
by its estimated head pose keeps both: each face runs the *frontal* model's cascade; its stage-1 landmarks
give |yaw| (:func:`model_store.pose.estimate_pose`, the serving path's own solve); at or above a threshold
the face's landmarks are the *turned* model's instead. Nothing is trained or served here: both cascades run
on every face and the choice is made afterwards, per threshold (the built version of this gate, with a learned
yaw head per stage inside the model files, is ``train.export.gate``: faceapi-ibug68 4.4.0). The turned models
measured so far are
``faceapi_v52_ibug68.yaml`` and the turned-face specialist ``faceapi_v53_turned_ibug68.yaml``, each exported
to a scratch store (``wingmark export RUN --name faceapi-ibug68-turned --version 0.1.0 --fp16-weights
--store /tmp/store53``; not published):

    python -m tools.studies.pose_gate --frontal faceapi-ibug68@4.3.0 \\
        --turned /tmp/store53:faceapi-ibug68-turned@0.1.0 --out docs/pose_gate_ibug68_turned.json

A model is ``[STORE_DIR:]NAME@VERSION`` (default store: the repository's). Sets: the synthetic test set
(exact labels, jaw on the visible outline) and the real held-out faces (teacher labels, not human), both from
the tight box of their labels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.pose import estimate_pose
from model_store.schemes import get_scheme
from tools.studies import write_json

__all__ = ["gate_table", "main"]


def gate_table(
    err_frontal: np.ndarray, err_turned: np.ndarray, yaw: np.ndarray, thresholds: Sequence[float]
) -> dict[str, dict[str, float | int]]:
    """Mean per-face error of each model alone and of the gated choice per threshold.

    ``err_frontal``, ``err_turned``: ``[N]`` per-face errors of the two cascades; ``yaw``: ``[N]`` estimated
    yaw in degrees (its sign is ignored). A face with ``|yaw| >= t`` takes ``err_turned``, the others
    ``err_frontal``. Returns ``{"frontal": {...}, "turned": {...}, "gate 30": {...}, ...}``, each with
    ``nme`` (mean) and ``to_turned`` (faces routed to the turned model).
    """
    a = np.asarray(err_frontal, dtype=np.float64)
    b = np.asarray(err_turned, dtype=np.float64)
    y = np.abs(np.asarray(yaw, dtype=np.float64))
    if not (a.shape == b.shape == y.shape) or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need three equal non-empty [N] arrays, got {a.shape}, {b.shape}, {y.shape}")
    table: dict[str, dict[str, float | int]] = {
        "frontal": {"nme": float(a.mean()), "to_turned": 0},
        "turned": {"nme": float(b.mean()), "to_turned": int(a.size)},
    }
    for t in thresholds:
        to_turned = y >= t
        table[f"gate {t:g}"] = {
            "nme": float(np.where(to_turned, b, a).mean()),
            "to_turned": int(to_turned.sum()),
        }
    return table


def _load(spec: str) -> tuple[str, Callable[[int, np.ndarray], np.ndarray], list[Any]]:
    from train.export.evaluate import StageGeometry
    from train.export.gate import resolve_spec
    from train.export.parity import onnx_runtime_session, run_onnx

    model = resolve_spec(spec)
    if model.manifest.scheme != "ibug68":
        raise ValueError(
            f"{spec}: the pose gate is measured on the 68-point scheme, not {model.manifest.scheme}"
        )
    sessions = [onnx_runtime_session(model.path / s.file) for s in model.manifest.stages]

    def run(stage: int, batch: np.ndarray) -> np.ndarray:
        return run_onnx(sessions[stage], batch)

    return (
        f"{model.manifest.name}@{model.manifest.version}",
        run,
        [StageGeometry.from_spec(s) for s in model.manifest.stages],
    )


def main(argv: list[str] | None = None) -> int:
    from train.data.real import RealFaces
    from train.data.synthetic import SyntheticFaces
    from train.export.evaluate import cascade_predict
    from train.metrics import nme_per_sample

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frontal", required=True, help="[STORE_DIR:]NAME@VERSION for near-frontal faces")
    ap.add_argument("--turned", required=True, help="[STORE_DIR:]NAME@VERSION for turned faces")
    ap.add_argument("--thresholds", default="20,30,45,60", help="|yaw| thresholds in degrees")
    ap.add_argument("--real-root", type=Path, default=Path("cache/real"))
    ap.add_argument("--synthetic-num", type=int, default=500)
    ap.add_argument("--synthetic-seed", type=int, default=3, help="3: the test set; 2: the validation set")
    ap.add_argument("--cache-dir", default="cache/synthetic")
    ap.add_argument("--note", default="", help="free text kept in the report (what the models are)")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",") if t]
    scheme = get_scheme("ibug68")
    frontal, turned = _load(args.frontal), _load(args.turned)
    synthetic_spec = {
        "kind": "synthetic",
        "num": args.synthetic_num,
        "seed": args.synthetic_seed,
        "image_size": 256,
        "cache_dir": args.cache_dir,
        "jaw": "contour",
    }
    # the training configs' synthetic splits: seed 2 is validation (300 faces), seed 3 the test set
    synthetic_name = {2: "synthetic_val", 3: "synthetic_test"}.get(
        args.synthetic_seed, f"synthetic_seed{args.synthetic_seed}"
    )
    sets = {
        synthetic_name: (
            SyntheticFaces.from_spec(synthetic_spec, "ibug68"),
            "exact (renderer), jaw outline",
        ),
        "real_test": (RealFaces(args.real_root, "test"), "teacher consensus (dlib + MediaPipe), not human"),
    }
    report: dict[str, Any] = {
        "frontal": frontal[0],
        "turned": turned[0],
        "specs": {"frontal": args.frontal, "turned": args.turned},
        "note": args.note,
        "gate": "|yaw| from the frontal model's stage-1 landmarks (model_store.pose.estimate_pose)",
        "box": "tight box of the labels",
        "sets": {},
    }
    for label, (faces, truth) in sets.items():
        samples = [faces[i] for i in range(len(faces))]
        gt = np.stack([s.points for s in samples]).astype(np.float64)
        images = [s.image for s in samples]
        boxes = tight_box(gt)
        normaliser = np.asarray(scheme.normaliser_distance(gt, boxes), dtype=np.float64)
        pred_a = cascade_predict(frontal[1], frontal[2], images, boxes, scheme)
        pred_b = cascade_predict(turned[1], turned[2], images, boxes, scheme)
        yaw = np.array(
            [
                estimate_pose(p, "ibug68", im.shape[1], im.shape[0]).yaw
                for p, im in zip(pred_a[0], images, strict=True)
            ]
        )
        table = gate_table(
            nme_per_sample(pred_a[-1], gt, normaliser),
            nme_per_sample(pred_b[-1], gt, normaliser),
            yaw,
            thresholds,
        )
        report["sets"][label] = {"labels": truth, "faces": len(samples), "table": table}
        print(label, " | ".join(f"{k} {v['nme'] * 100:.2f} % ({v['to_turned']})" for k, v in table.items()))
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
