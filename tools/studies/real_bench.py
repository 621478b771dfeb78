"""The real-photo benchmark: models' NME on the held-out real faces (``wingmark data bench``).

Ground truth is the *teacher consensus* (dlib's 68 points where MediaPipe Face Mesh agrees; see
``train.data.real``), not human annotation. Each model runs its cascade through
``train.export.evaluate.cascade_predict`` from the tight box of the consensus label (a perfect client
box: the stage-1 crop rule widens it as in training), so the figure measures landmarks, not face
detection. For ``aflw19`` models the consensus is reduced to 19 points with
``train.data.face3d.aflw19_from_68`` (means of 68-point groups) and the scheme's own normaliser is
used (for AFLW's ``box_size``: sqrt(w * h) of the tight box of the 68 consensus points). The
reference row "mediapipe (2nd teacher)" is the mapped mesh against the same labels, inter-ocular: it
says how far two independent real-photo models are apart on these faces.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.schemes import get_scheme
from model_store.store import ModelStore
from train.data.real import REGIONS, RealFaces
from train.metrics import nme_per_sample, summarise

__all__ = ["DEFAULT_MODELS", "bench_models", "default_cache", "main", "write_report"]

DEFAULT_MODELS = ("cnn67-ibug68@1.0.0", "cnn67-aflw19@1.0.0")


def default_cache() -> Path:
    """``$WINGMARK_REAL_CACHE`` or ``<repo>/cache/real`` (git ignores /cache/)."""
    env = os.environ.get("WINGMARK_REAL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "cache" / "real"


def _stats(errors: np.ndarray) -> dict[str, Any]:
    s = summarise(errors)
    return {"faces": len(errors), **s}


def bench_models(
    cache: Path, models: list[str], *, split: str = "test", store: ModelStore | None = None
) -> dict[str, Any]:
    from train.data.face3d import aflw19_from_68
    from train.export.evaluate import StageGeometry, cascade_predict
    from train.export.parity import onnx_runtime_session, run_onnx

    faces = RealFaces(cache, split)
    if len(faces) == 0:
        raise ValueError(f"no kept faces in the {split!r} split of {cache}")
    samples = [faces[i] for i in range(len(faces))]
    sources = np.asarray([s.meta["source"] for s in samples])
    gt68 = np.stack([s.points for s in samples]).astype(np.float64)
    images = [s.image for s in samples]
    detector_boxes = [s.meta["detector_box"] for s in samples]
    store = store or ModelStore()
    report: dict[str, Any] = {
        "split": split,
        "truth": "teacher consensus (dlib 68-point where MediaPipe agrees), not human annotation",
        "box": "tight box of the consensus label (from_dlib_box: dlib HOG box + dlib_hog calibration;"
        " from_raw_dlib_box_as_client_box: dlib HOG box sent as a client box, as its users would)",
        "faces": len(samples),
        "faces_per_source": {
            str(k): int(v) for k, v in zip(*np.unique(sources, return_counts=True), strict=True)
        },
        "models": {},
    }

    def per_source(errors: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"all": _stats(errors)}
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(sources):
            groups[str(s)].append(i)
        for name, idx in sorted(groups.items()):
            out[name] = _stats(errors[idx])
        return out

    # reference: the second teacher against the consensus (the recorded agreement score)
    ref = np.asarray([s.meta["agreement"]["nme"] for s in samples], dtype=np.float64)
    report["reference_mediapipe_vs_dlib"] = per_source(ref)

    for spec in models:
        name, _, version = spec.partition("@")
        model = store.resolve(name, version or "latest")
        manifest = model.manifest
        scheme = get_scheme(manifest.scheme)
        sessions = [onnx_runtime_session(model.path / s.file) for s in manifest.stages]
        stages = [StageGeometry.from_spec(s) for s in manifest.stages]
        gt = gt68 if scheme.name == "ibug68" else np.asarray(aflw19_from_68(gt68))
        boxes = tight_box(gt68)  # the same face box for both schemes

        def run(stage: int, batch: np.ndarray, sessions: list[object] = sessions) -> np.ndarray:
            return run_onnx(sessions[stage], batch)

        preds = cascade_predict(run, stages, images, boxes, scheme)
        normaliser = np.asarray(scheme.normaliser_distance(gt, boxes), dtype=np.float64)
        entry: dict[str, Any] = {
            "scheme": scheme.name,
            "normaliser": scheme.normaliser,
            "num_stages": len(preds),
        }
        labels = ["stage1" if k == 1 else f"cascade_stage{k}" for k in range(1, len(preds) + 1)]
        for label, pred in zip(labels, preds, strict=True):
            entry[label] = per_source(nme_per_sample(pred, gt, normaliser))
        if scheme.name == "ibug68":  # where on the face the error is (all faces, per region)
            dist = [np.linalg.norm(p - gt, axis=-1) / normaliser[:, None] for p in preds]  # (N, 68)
            entry["regions"] = {
                label: {r: round(float(d[:, a:b].mean()), 5) for r, (a, b) in REGIONS.items()}
                for label, d in zip(labels, dist, strict=True)
            }
        # as the service does by default: dlib HOG's box through the model's dlib_hog calibration
        calibration = manifest.box_calibrations.get("dlib_hog", manifest.box_calibrations["client"])
        det = calibration.to_calibration().apply(np.asarray(detector_boxes, dtype=np.float64))
        det_preds = cascade_predict(run, stages, images, det, scheme)
        entry["from_dlib_box"] = {
            label: per_source(nme_per_sample(pred, gt, normaliser))
            for label, pred in zip(labels, det_preds, strict=True)
        }
        # a user with their own detector: dlib HOG's box sent as the client box (no calibration)
        raw_preds = cascade_predict(run, stages, images, np.asarray(detector_boxes, dtype=np.float64), scheme)
        entry["from_raw_dlib_box_as_client_box"] = {
            label: per_source(nme_per_sample(pred, gt, normaliser))
            for label, pred in zip(labels, raw_preds, strict=True)
        }
        # the model's own synthetic figures, for side-by-side reading: its test set where the
        # manifest has one (2.0.0 on), else the validation set it was published on (1.0.0)
        ev = manifest.evaluation
        synthetic_set = "test" if isinstance(ev.get("test"), dict) else "val"
        block = ev["test"] if synthetic_set == "test" else ev
        entry["synthetic_set_from_manifest"] = synthetic_set
        entry["synthetic_nme_from_manifest"] = {
            k: block[k]["nme"]
            for k in ("stage1", "stage2")
            if isinstance(block.get(k), dict) and "nme" in block[k]
        }
        report["models"][f"{manifest.name}@{manifest.version}"] = entry
    return report


def _table(report: dict[str, Any]) -> str:
    sources = ["all", *sorted(report["faces_per_source"])]
    head = (
        "| model | stage | "
        + " | ".join(f"{s} ({report['faces_per_source'].get(s, report['faces'])})" for s in sources)
        + " |"
    )
    head += " synthetic (manifest: test, else val) |"
    lines = [head, "|" + "---|" * (len(sources) + 3)]

    def row(label: str, stage: str, block: dict[str, Any], synthetic: float | None = None) -> str:
        cells = [f"{100 * block[s]['nme']:.2f}" if s in block else "-" for s in sources]
        cells.append("-" if synthetic is None else f"{100 * synthetic:.2f}")
        return f"| {label} | {stage} | " + " | ".join(cells) + " |"

    lines.append(row("mediapipe (2nd teacher), reference", "-", report["reference_mediapipe_vs_dlib"]))
    for model, entry in report["models"].items():
        for stage in [k for k in entry if k.startswith(("stage", "cascade"))]:
            key = "stage1" if stage == "stage1" else stage.removeprefix("cascade_")
            synthetic = entry.get("synthetic_nme_from_manifest", {}).get(key)
            lines.append(row(f"{model} ({entry['scheme']})", stage, entry[stage], synthetic))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wingmark data bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="NAME@VERSION,...")
    parser.add_argument("--split", default="test", choices=["test", "train", "all"])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--json", type=Path, default=Path("runs/real_bench/real_bench.json"))
    args = parser.parse_args(argv)
    report = bench_models(
        args.cache_dir,
        [m for m in args.models.split(",") if m],
        split=args.split,
        store=ModelStore(args.store) if args.store else None,
    )
    return write_report(report, _table(report), args.json)


def write_report(report: dict[str, Any], table: str, path: Path) -> int:
    """``report`` with its Markdown ``table`` (key ``table_nme_percent``) -> JSON at ``path``; prints the
    table."""
    report["table_nme_percent"] = table
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
