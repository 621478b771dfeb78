"""Where turned faces go wrong: a training run's cascade on the synthetic test set (exact labels), per
|yaw| bin, with two normalisers and per face region.

The 68-point NME divides by the outer-eye-corner distance, which shrinks towards zero in profile, so its
|yaw| 60-90 bin is dominated by the most turned faces. Beside it: the errors over the square root of the
tight box's area ("nme_box"), the median ratio of the two normalisers, the NME of each face region, and the
NME each bin would read if its faces were off by the model's frontal box error; for the whole set,
AFLW2000-3D's large-pose figures ("large_pose": box NME per |yaw| 0-30 / 30-60 / 60-90 and their mean).

    python -m tools.studies.yaw_errors runs/faceapi_v42_ibug68 runs/faceapi_v43_ibug68 \\
        --out docs/yaw_errors_ibug68.json

A published version (``[STORE_DIR:]NAME@VERSION``, e.g. ``faceapi-ibug68@4.4.0``) runs through the runtime
(ONNX Runtime, from the tight box of the labels) instead of a run's checkpoints. ``--data`` takes another
dataset spec, e.g. the held-out people's real faces re-posed to large yaws (``wingmark data repose --split
test`` first):

    python -m tools.studies.yaw_errors faceapi-ibug68@4.3.0 faceapi-ibug68@4.5.0 \\
        --data '{"kind": "repose", "split": "test", "per_face": 4, "seed": 7, "yaw_max": 75}'

``--client-box dlib_hog`` (published versions) starts each face from dlib HOG's box sent as the client box,
as a user with their own detector would: only the faces HOG finds, with the tight-box figures of the same
faces beside them (``tight_same_faces``) and per |yaw| bin how many it found (``found_by_detector``).
``--views`` averages the last stage over shifted crops (``runtime.cascade.VIEWS``).
The run name ``dlib`` (with ``--client-box dlib_hog``) is the reference: dlib's own 68-point predictor from
its own HOG box, on the same faces, against the same labels.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from runtime.cascade import VIEWS
from runtime.landmarker import REFINE
from tools.studies import write_json
from tools.studies.photo_bench import hog_boxes
from tools.studies.real_bench import default_cache
from train.data.real import REGIONS as REGIONS_68  # iBUG 68-point regions (half-open)
from train.data.render import JAW_CONVENTIONS
from train.metrics import YAW_EDGES, large_pose_nme, radial_error, yaw_bin_labels

__all__ = ["DATA_LABELS", "SERVICE", "dlib_points", "evaluation_sets", "labelled_set", "main",
           "yaw_error_table"]  # fmt: skip

# a face whose normaliser is under this fraction of its box size (sqrt of the tight box area): in profile
# the two outer eye corners project nearly onto each other, and the inter-ocular NME of such a face is its
# box error times 10 or more
SMALL_NORMALISER = 0.1
SERVICE = "service:"  # --client-box service:NAME: the runtime's detector NAME, as the service runs it
DLIB = "dlib"  # the reference run: dlib's 68-point predictor from its own HOG box (--client-box dlib_hog)

# what the labels of a --data set are
DATA_LABELS = {
    "synthetic": "exact (renderer)",
    "repose": "re-posed real faces: the photo's teacher labels (dlib's 68 points where MediaPipe agrees) "
    "carried through MediaPipe's 3-D face mesh to the new pose, jaw on the visible outline; neither human "
    "nor exact",
    "real": "teacher labels (dlib's 68 points where MediaPipe agrees), not human ground truth",
}


def yaw_error_table(
    pred: np.ndarray,
    gt: np.ndarray,
    normaliser: np.ndarray,
    yaw: np.ndarray,
    regions: Mapping[str, tuple[int, int]] = REGIONS_68,
    edges: Sequence[float] = YAW_EDGES,
) -> dict[str, dict[str, Any]]:
    """Per |yaw| bin (and "all"): n, mean and median NME with ``normaliser`` ``[N]``, mean NME by the
    square root of the tight box area of ``gt`` ("nme_box"), the median ratio normaliser / sqrt(box
    area), the faces whose normaliser is under ``SMALL_NORMALISER`` of that size ("small_normaliser":
    their number and their share of the bin's NME sum; an eye corner hidden behind the other), the mean
    NME of each region's points, and "nme_at_frontal_box_error": the NME the bin would read if each of its
    faces were off by the first bin's mean "nme_box" (the model's own frontal accuracy, measured by the
    box), which isolates what the normaliser alone does to a turned bin (None without frontal faces).
    "all" also has "large_pose" (``train.metrics.large_pose_nme``). ``pred``, ``gt``: ``[N, K, 2]``;
    ``yaw``: ``[N]`` degrees."""
    pred_, gt_ = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    dist = np.linalg.norm(pred_ - gt_, axis=2)  # (N, K)
    box = tight_box(gt_)
    box_size = np.sqrt(np.maximum((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), 1e-12))
    norm = np.asarray(normaliser, np.float64)
    labels = yaw_bin_labels(np.asarray(yaw, np.float64), edges)
    out: dict[str, dict[str, Any]] = {}
    names = [f"|yaw| {edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)]
    first = labels == names[0]
    frontal_box = float((dist[first].mean(axis=1) / box_size[first]).mean()) if first.any() else None
    for name in ["all", *names, "unknown"]:
        sel = np.ones(len(dist), bool) if name == "all" else labels == name
        if not sel.any():
            continue
        d, nrm, bs = dist[sel], norm[sel], box_size[sel]
        per_face = d.mean(axis=1) / nrm
        small = nrm / bs < SMALL_NORMALISER
        out[name] = {
            "n": int(sel.sum()),
            "nme": float(per_face.mean()),
            "nme_median": float(np.median(per_face)),
            "small_normaliser": [int(small.sum()), float(per_face[small].sum() / max(per_face.sum(), 1e-12))],
            "nme_box": float((d.mean(axis=1) / bs).mean()),
            "normaliser_over_box": float(np.median(nrm / bs)),
            "nme_at_frontal_box_error": None
            if frontal_box is None
            else float((frontal_box * bs / nrm).mean()),
            "regions": {r: float((d[:, a:b].mean(axis=1) / nrm).mean()) for r, (a, b) in regions.items()},
        }
        if name == "all":  # AFLW2000-3D's protocol, to set beside published large-pose figures
            out[name]["large_pose"] = large_pose_nme(pred_, gt_, yaw)
        if "jaw" in regions:
            a, b = regions["jaw"]
            out[name]["jaw_radial"] = float(radial_error(pred_[sel], gt_[sel], nrm, slice(a, b)).mean())
    return out


def evaluation_sets(real_root: Path, *, reposed: bool = True) -> dict[str, dict[str, Any]]:
    """The sets the studies measure on, by name: the synthetic validation set (exact labels, jaw on the
    outline) and, where ``real_root`` (the real-face cache) holds them, its held-out faces and (with
    ``reposed``) their re-posed renders of ``wingmark data repose --split test``."""
    sets: dict[str, dict[str, Any]] = {
        "synthetic_validation": {"kind": "synthetic", "num": 300, "seed": 2, "image_size": 256,
                                 "cache_dir": "cache/synthetic", "jaw": "contour"},
    }  # fmt: skip
    if (real_root / "manifest.json").is_file():
        sets["real_held_out"] = {"kind": "real", "root": str(real_root), "split": "test"}
    repose = real_root.parent / "repose-test"
    if reposed and repose.is_dir():
        sets["reposed_held_out"] = {"kind": "repose", "root": str(real_root), "split": "test", "per_face": 4,
                                    "seed": 7, "image_size": 256, "yaw_max": 75,
                                    "cache_dir": str(repose / "renders")}  # fmt: skip
    return sets


def labelled_set(
    spec: Mapping[str, Any], scheme: str
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """A dataset spec's samples, their labels ``[N, K, 2]``, the scheme's normaliser ``[N]`` and the yaw
    ``[N]`` in degrees (NaN where the set does not know it)."""
    from model_store.schemes import get_scheme
    from train.dataset import load_samples

    samples = load_samples(spec, scheme, progress=False)
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    boxes = np.stack([np.asarray(s.box, dtype=np.float64) for s in samples])
    norm = get_scheme(scheme).normaliser_distance(gt, boxes)
    yaw = np.array([float(s.meta.get("yaw", np.nan)) for s in samples])
    return samples, gt, norm, yaw


def _model_table(
    name: str, spec: Mapping[str, Any], client_box: str = "tight", refine: str = "detector", views: int = 1
) -> dict[str, Any]:
    from runtime import Landmarker
    from runtime.backends import create_backend
    from train.export.gate import resolve_spec

    model = resolve_spec(name)
    scheme_name = model.manifest.scheme
    samples, gt, norm, yaw = labelled_set(spec, scheme_name)
    images = [s.image for s in samples]
    backend = create_backend("onnxruntime", model, device="cpu", max_batch_size=64)
    regions = REGIONS_68 if scheme_name == "ibug68" else {}
    detector = None
    if client_box.startswith(SERVICE):
        from runtime.detectors import create_detector
        from service.settings import Settings

        found_by = client_box[len(SERVICE) :]
        # built with the options the service gives it
        detector = create_detector(found_by, **Settings(detector=found_by).detector_options())
    with Landmarker(model, backend, detector, refine=refine, views=views) as landmarker:
        points = landmarker.landmarks(images, tight_box(gt), batch_size=64)
        table: dict[str, Any] = {
            "run": f"{model.name}@{model.version}",
            "stages": [s.architecture for s in model.manifest.stages],
            "client_box": client_box,
            "refine": refine,
            "views": landmarker.cascade.views,
        }
        if client_box == "tight":
            return table | {
                f"stage{k}": yaw_error_table(p, gt, norm, yaw, regions) for k, p in enumerate(points, start=1)
            }
        if detector is not None:
            # the service's own detection on the whole image, as POST /v1/landmarks without boxes runs
            # it: the final points of the detected face that matches the labelled one
            found, final = _service_points(landmarker, images, gt)
            sel = np.flatnonzero(found)
            staged = [final[sel]]
        else:
            # dlib HOG's box sent as the client box (the client calibration), on the faces HOG finds
            found, hog = hog_boxes(images, tight_box(gt))
            sel = np.flatnonzero(found)
            client = landmarker.calibration("client").apply(hog[sel])
            hog_images = [images[i] for i in sel]
            staged = landmarker.landmarks(hog_images, client, batch_size=64)
            if refine == "always":  # the client's box gets the second pass too (WINGMARK_REFINE=always)
                again = Landmarker.refine_boxes(staged[-1])
                staged = landmarker.landmarks(hog_images, again, batch_size=64)
    g, n, y = gt[sel], norm[sel], yaw[sel]
    table["found_by_detector"] = _found_per_bin(found, yaw)
    table["tight_same_faces"] = yaw_error_table(points[-1][sel], g, n, y, regions)
    last = len(table["stages"])  # the service's path gives the final stage's points only
    return table | {
        f"stage{k}": yaw_error_table(p, g, n, y, regions)
        for k, p in enumerate(staged, start=last - len(staged) + 1)
    }


def _found_per_bin(found: np.ndarray, yaw: np.ndarray) -> dict[str, list[int]]:
    """Per |yaw| bin: [faces found, faces]."""
    bins = yaw_bin_labels(yaw)
    names = sorted(set(bins.tolist()))
    return {name: [int(found[bins == name].sum()), int((bins == name).sum())] for name in names}


def _service_points(
    landmarker: Any, images: Sequence[np.ndarray], gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The landmarker's own detection and cascade on each whole image (``Landmarker.predict``): found
    [N] bool (a detected face overlaps the tight box of the labels ``gt`` [N, K, 2] at IoU >=
    ``MATCH_IOU``) and the best-overlapping face's final points [N, K, 2] (NaN where none)."""
    from tools.studies.detect_bench_core import match_faces

    found = np.zeros(len(images), bool)
    points = np.full(gt.shape, np.nan)
    for i, (image, box) in enumerate(zip(images, tight_box(gt), strict=True)):
        faces = landmarker.predict(np.ascontiguousarray(image))
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        best = int(match_faces(boxes, box[None])[0])  # -1: no face overlaps the labels enough
        if best >= 0:
            found[i], points[i] = True, faces[best].landmarks
    return found, points


def dlib_points(
    images: Sequence[np.ndarray], gt: np.ndarray, predictor: Path
) -> tuple[np.ndarray, np.ndarray]:
    """dlib's ``predictor`` from HOG's box per labelled face ``gt``: found [N], points [N, 68, 2] or NaN."""
    import dlib

    from runtime.detectors.base import dlib_rect_from_box, points_from_dlib_shape

    found, hog = hog_boxes(images, tight_box(gt))
    shape = dlib.shape_predictor(str(predictor))
    points = np.full((len(images), 68, 2), np.nan)
    for i in np.flatnonzero(found):
        points[i] = points_from_dlib_shape(shape(images[int(i)], dlib_rect_from_box(hog[i])))
    return found, points


def _dlib_table(spec: Mapping[str, Any], predictor: Path) -> dict[str, Any]:
    """The reference: dlib's 68-point predictor from its own HOG box, on the faces HOG finds."""
    if not predictor.exists():
        raise FileNotFoundError(f"{predictor}: dlib's 68-point predictor (wingmark data real fetches it)")
    samples, gt, norm, yaw = labelled_set(spec, "ibug68")
    images = [np.ascontiguousarray(s.image) for s in samples]
    found, points = dlib_points(images, gt, predictor)
    sel = np.flatnonzero(found)
    if not len(sel):
        raise ValueError("dlib's HOG detector found none of the labelled faces")
    return {
        "run": f"dlib 68-point predictor ({predictor.name}) from its own HOG box",
        "stages": [DLIB],
        "client_box": "dlib_hog",
        "found_by_detector": _found_per_bin(found, yaw),
        "stage1": yaw_error_table(points[sel], gt[sel], norm[sel], yaw[sel]),
    }


def _run_table(run: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    from train.config import load_config
    from train.loop import cascade_points, run_stage_paths

    paths = run_stage_paths(run)
    scheme_name = str(load_config(run / "config.resolved.yaml")["data"]["scheme"])  # the run's, as trained
    samples, gt, norm, yaw = labelled_set(spec, scheme_name)
    points, ckpts = cascade_points(paths, samples)
    regions = REGIONS_68 if scheme_name == "ibug68" else {}
    return {
        "run": str(run),
        "stages": [str(ck["config"][f"stage{k}"]["architecture"]) for k, ck in enumerate(ckpts, start=1)],
        **{f"stage{k}": yaw_error_table(p, gt, norm, yaw, regions) for k, p in enumerate(points, start=1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "runs",
        nargs="+",
        help="training run directories (stage1/, stage2/), [STORE_DIR:]NAME@VERSION, or 'dlib' (the "
        "reference: dlib's 68-point predictor from its own HOG box; with --client-box dlib_hog)",
    )
    ap.add_argument("--num", type=int, default=500, help="synthetic test faces (the configs' test set)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--cache-dir", default="cache/synthetic")
    ap.add_argument(
        "--jaw",
        choices=JAW_CONVENTIONS,
        default="surface",
        help="the test labels' jaw: at the projected 3-D points or on the visible outline (300-W)",
    )
    ap.add_argument(
        "--data",
        type=json.loads,
        default=None,
        help="a JSON dataset spec instead of the synthetic test set, e.g. re-posed held-out real faces: "
        '\'{"kind": "repose", "split": "test", "per_face": 4, "seed": 7, "yaw_max": 75}\'',
    )
    ap.add_argument(
        "--client-box",
        default="tight",
        help="published versions: 'tight' (the labels' box), 'dlib_hog' (HOG's box as the client box) or "
        "'service:NAME' (the runtime's detector NAME finds the face); the faces found, tight figures beside",
    )
    ap.add_argument(
        "--refine",
        choices=REFINE,
        default="detector",
        help="the second pass from the first pass's points (runtime.landmarker.REFINE): 'detector' (the "
        "default) gives it to the faces of --client-box service:NAME, 'always' to every face",
    )
    ap.add_argument("--views", type=int, choices=VIEWS, default=1, help="the last stage's crops per face")
    ap.add_argument(
        "--predictor",
        type=Path,
        default=default_cache() / "models" / "shape_predictor_68_face_landmarks.dat",
        help="dlib's 68-point predictor for the 'dlib' run",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    if args.client_box not in ("tight", "dlib_hog") and not args.client_box.startswith(SERVICE):
        ap.error(f"--client-box: 'tight', 'dlib_hog' or '{SERVICE}NAME', not {args.client_box!r}")
    spec: dict[str, Any] = {
        "kind": "synthetic",
        "num": args.num,
        "seed": args.seed,
        "image_size": 256,
        "cache_dir": args.cache_dir,
        "jaw": args.jaw,
    }
    labels = "exact (renderer)" + (", jaw on the visible outline" if args.jaw == "contour" else "")
    if args.data is not None:
        spec = dict(args.data)
        labels = DATA_LABELS.get(str(spec.get("kind")), "as the dataset kind gives them")
    report: dict[str, Any] = {"data": spec, "labels": labels, "runs": []}
    for run in args.runs:
        if run == DLIB:
            if args.client_box != "dlib_hog":
                ap.error("the 'dlib' reference runs from its own HOG box: add --client-box dlib_hog")
            table = _dlib_table(spec, args.predictor)
        elif args.client_box != "tight" and "@" not in run:
            ap.error(f"--client-box {args.client_box} needs a published version (NAME@VERSION)")
        else:
            table = (
                _model_table(run, spec, args.client_box, args.refine, args.views)
                if "@" in run
                else _run_table(Path(run), spec)
            )
        report["runs"].append(table)
        last = table[f"stage{len(table['stages'])}"]
        print(run)
        for name, row in last.items():
            regions = " ".join(f"{r} {v * 100:.1f}" for r, v in row["regions"].items())
            if "jaw_radial" in row:
                regions += f" | jaw outward {row['jaw_radial'] * 100:+.2f}"
            at = row["nme_at_frontal_box_error"]
            print(
                f"  {name:>12} n={row['n']:3d} nme {row['nme'] * 100:5.1f} % "
                f"(median {row['nme_median'] * 100:4.1f}) "
                f"nme_box {row['nme_box'] * 100:4.2f} % norm/box {row['normaliser_over_box']:.3f} "
                f"at frontal box error {'-' if at is None else f'{at * 100:4.1f} %'} | {regions}"
            )
        lp = {k: v if k == "balanced" else v["nme"] for k, v in last["all"]["large_pose"].items()}
        shown = ", ".join(f"{k} {'-' if v is None else f'{v * 100:.2f}'}" for k, v in lp.items())
        print(f"  AFLW2000-3D protocol, box NME %: {shown}")
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
