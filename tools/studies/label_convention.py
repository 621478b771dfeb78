"""How much of an error is a shared offset per point (a labelling convention) and how much is scatter?

    python -m tools.studies.label_convention faceapi-ibug68@4.9.0 --out docs/label_convention.json

Each face's error vectors (prediction minus label, per point) are turned into the face's own frame (the line
between the eye centres horizontal) and divided by its inter-ocular normaliser. Their mean over the faces, per
point, is the *mean offset*: what a predictor does the same way on every face, as a different labelling
convention would (dlib's teacher labels put the jaw and brows elsewhere than the renderer's exact labels).
The NME with that offset taken away is the scatter that no convention can explain.

Sets: the synthetic validation set (exact labels), faces under 30 degrees of yaw that dlib's HOG finds, where
dlib's 68-point predictor (the real photos' teacher) runs beside the models from its own box; and the real
held-out photos (teacher labels), all faces, models only. The models run as served from the tight box.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.schemes import get_scheme
from tools.studies import write_json
from tools.studies.real_bench import default_cache
from tools.studies.yaw_errors import DATA_LABELS, dlib_points, evaluation_sets, labelled_set
from train.data.real import REGIONS

__all__ = ["aligned_errors", "convention_table", "main", "offset_split"]

FRONTAL_YAW = 30.0  # degrees: the synthetic faces compared with dlib (its HOG finds few beyond)


def aligned_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """68-point predictions and labels ``[N, 68, 2]`` -> errors ``[N, 68, 2]`` in each face's frame: rotated
    so that the labels' eye centres lie level (left eye first), in units of the labels' inter-ocular
    normaliser (the scheme's NME normaliser)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    eyes = gt[:, 42:48].mean(axis=1) - gt[:, 36:42].mean(axis=1)
    angle = np.arctan2(eyes[:, 1], eyes[:, 0])
    c, s = np.cos(-angle), np.sin(-angle)
    rot = np.stack([np.stack([c, -s], axis=-1), np.stack([s, c], axis=-1)], axis=-2)  # [N, 2, 2]
    norm = get_scheme("ibug68").normaliser_distance(gt)
    return np.asarray(np.einsum("nij,nkj->nki", rot, pred - gt) / norm[:, None, None])


def offset_split(errors: np.ndarray) -> dict[str, Any]:
    """Aligned errors ``[N, 68, 2]`` -> NME, the NME with the mean offset per point taken away, and the mean
    offset's length (mean over the points; per region too), all in inter-ocular units. Scatter alone leaves a
    mean offset of about its NME over sqrt(N) (``offset_from_scatter``): an offset near that is noise."""
    e = np.asarray(errors, dtype=np.float64)
    offset = e.mean(axis=0)  # [68, 2]
    length = np.linalg.norm(offset, axis=1)
    scatter = float(np.linalg.norm(e - offset, axis=2).mean())
    return {
        "n": len(e),
        "nme": float(np.linalg.norm(e, axis=2).mean()),
        "nme_without_mean_offset": scatter,
        "mean_offset": float(length.mean()),
        "offset_from_scatter": scatter / np.sqrt(max(len(e), 1)),
        "mean_offset_by_region": {r: float(length[lo:hi].mean()) for r, (lo, hi) in REGIONS.items()},
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two offset fields ``[68, 2]`` (1: the same direction at every point)."""
    x, y = np.ravel(a), np.ravel(b)
    return float(x @ y / max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-12))


def _model_points(spec: str, images: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """A published version's final points ``[N, 68, 2]`` from the client boxes, as served (float)."""
    from runtime import Landmarker
    from runtime.backends import create_backend
    from train.export.gate import resolve_spec

    model = resolve_spec(spec)
    backend = create_backend("onnxruntime", model, device="cpu", max_batch_size=64)
    with Landmarker(model, backend, None) as landmarker:
        return np.asarray(landmarker.landmarks(list(images), boxes, batch_size=64)[-1])


def convention_table(
    spec: Mapping[str, Any], models: Sequence[str], predictor: Path | None
) -> dict[str, Any]:
    """One set: each predictor's :func:`offset_split` on the same faces and the cosine between their
    mean offsets. With ``predictor`` (dlib's file): the faces under :data:`FRONTAL_YAW` that HOG finds."""
    samples, gt, _, yaw = labelled_set(spec, "ibug68")
    images = [np.ascontiguousarray(s.image) for s in samples]
    keep = np.ones(len(gt), bool)
    predictions: dict[str, np.ndarray] = {}
    if predictor is not None:
        found, points = dlib_points(images, gt, predictor)
        keep = found & (np.abs(yaw) < FRONTAL_YAW)
        predictions[f"dlib ({predictor.name}, its HOG box)"] = points[keep]
    sel = np.flatnonzero(keep)
    for m in models:
        predictions[m] = _model_points(m, [images[i] for i in sel], tight_box(gt[sel]))
    errors = {k: aligned_errors(p, gt[sel]) for k, p in predictions.items()}
    offsets = {k: e.mean(axis=0) for k, e in errors.items()}
    keys = list(offsets)
    return {
        "data": dict(spec),
        "labels": DATA_LABELS.get(str(spec.get("kind")), ""),
        "faces": len(sel),
        "selection": f"|yaw| < {FRONTAL_YAW:g} and found by dlib's HOG" if predictor is not None else "all",
        "predictors": {k: offset_split(e) for k, e in errors.items()},
        "offset_cosine": {
            f"{a} ~ {b}": _cosine(offsets[a], offsets[b]) for i, a in enumerate(keys) for b in keys[i + 1 :]
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.studies.label_convention", description=__doc__.split("\n")[0]
    )
    parser.add_argument("models", nargs="+", help="[STORE_DIR:]NAME@VERSION of 68-point versions")
    parser.add_argument("--real-root", type=Path, default=default_cache())
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    predictor = args.real_root / "models" / "shape_predictor_68_face_landmarks.dat"
    sets = evaluation_sets(args.real_root, reposed=False)
    report: dict[str, Any] = {"unit": "inter-ocular (outer eye corners), in each face's eye-level frame"}
    for name, spec in sets.items():
        dlib_file = predictor if name == "synthetic_validation" and predictor.is_file() else None
        table = convention_table(spec, args.models, dlib_file)
        report[name] = table
        print(f"{name} ({table['labels']}; {table['faces']} faces, {table['selection']}), % of inter-ocular:")
        for who, r in table["predictors"].items():
            regions = ", ".join(f"{k} {v * 100:.2f}" for k, v in r["mean_offset_by_region"].items())
            print(
                f"  {who}: NME {r['nme'] * 100:.2f}, without the mean offset"
                f" {r['nme_without_mean_offset'] * 100:.2f};"
                f" mean offset {r['mean_offset'] * 100:.2f} ({regions}; scatter alone"
                f" {r['offset_from_scatter'] * 100:.2f})"
            )
        for pair, cos in table["offset_cosine"].items():
            print(f"  cosine {pair}: {cos:.2f}")
    if args.out is not None:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
