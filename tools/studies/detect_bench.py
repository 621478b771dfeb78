"""``wingmark data detect-bench``: face detectors side by side on the real photos, synthetic poses and speed.

wingmark data detect-bench [--cache-dir DIR] [--detectors a,b,...] [--max-frames N] [--synthetic N]
                           [--min-face PX] [--model NAME@VERSION] [--out DIR]

One run measures every detector named (default: every registered one) on the same inputs:

1. **Real photos** (the real-face cache, ``wingmark data real``): every still photo and
   ``--max-frames`` of the video frames the teachers looked at (evenly spaced over the sorted list),
   each decoded from its file as the service decodes it for the detector (``decode_and_detect``).
   Truth: the teachers' faces. A *labelled* face (kept: dlib and MediaPipe agree) is found when a
   detection overlaps the tight box of its 68 points with IoU >= ``MATCH_IOU`` (one detection per
   face, greedy by IoU); recall is by source and by face size (sqrt of the tight box's area). A
   detection that matches no labelled face and overlaps no face dlib found (kept or not; dlib's
   box, IoU >= ``MATCH_IOU``) is *unmatched*; ``false positives`` counts the unmatched ones at
   least ``TEACHER_MIN_FACE`` px (the teachers label no smaller face, so smaller detections can be
   faces nobody labelled). The teachers' own detector is dlib's HOG (upsampled once on images up
   to 1200 px): recall against its faces favours HOG by construction, and faces HOG misses
   (profiles, small faces) count as the others' false positives. A montage of every unmatched
   detection is written so they can be looked at.
2. **Synthetic faces** (``train.data.synthetic``, exact labels, yaw uniform in +-90 degrees): recall
   per |yaw| bin of 15 degrees, and unmatched detections per image.
3. **Speed**: decoding plus detecting a 1920x1080 JPEG (a face-api demo photo cut to 1080 rows) as
   the service does (each detector's JPEG at its ``decode_reduction``), wall and CPU ms per image and
   per megapixel, one thread, median of ``--repeats`` runs after a warm-up, at ``min_face`` 80 (the
   service's default ``detect_min_face``) and at ``--min-face``.
4. **Landmarks from detections** (``--model``, ibug68): on the real held-out faces, NME of the model's
   cascade from each detector's boxes (through a calibration fitted here on the train split's
   faces) against NME from the tight boxes of the labels, on the faces the detector found.

Writes ``detect_bench.json`` and ``detect_bench.png`` into ``--out``, and ``unmatched_<detector>.png``
(crops of the photos: not committed) into ``--montage-dir``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import BoxCalibration, tight_box
from runtime.detectors import DETECTORS, Detections, Detector, create_detector
from tools.studies.detect_bench_core import (
    MATCH_IOU,
    REPO,
    TEACHER_MIN_FACE,
    RealImage,
    bench_real,
    bench_speed,
    bench_synthetic,
    cpu_info,
    load_image,
    match_faces,
    real_images,
    speed_image,
)

__all__ = [
    "MATCH_IOU",
    "RealImage",
    "bench_real",
    "bench_speed",
    "bench_synthetic",
    "cpu_info",
    "main",
    "match_faces",
    "real_images",
]


def bench_landmarks(
    detectors: dict[str, Detector],
    cache: Path,
    images: Sequence[RealImage],
    found: dict[str, dict[str, Detections]],
    model_spec: str,
) -> dict[str, Any]:
    """NME of ``model_spec``'s cascade on the real held-out faces: from tight boxes vs from each
    detector's boxes through a calibration fitted on the train split's faces (same faces)."""
    from model_store.schemes import get_scheme
    from model_store.store import ModelStore
    from train.export.evaluate import StageGeometry, cascade_predict
    from train.export.parity import onnx_runtime_session, run_onnx
    from train.metrics import nme_per_sample

    name, _, version = model_spec.partition("@")
    model = ModelStore().resolve(name, version or "latest")
    manifest = model.manifest
    scheme = get_scheme(manifest.scheme)
    if scheme.name != "ibug68":
        raise ValueError("the landmark check needs an ibug68 model")
    sessions = [onnx_runtime_session(model.path / s.file) for s in manifest.stages]
    stages = [StageGeometry.from_spec(s) for s in manifest.stages]

    def run(stage: int, batch: np.ndarray) -> np.ndarray:
        return run_onnx(sessions[stage], batch)

    out: dict[str, Any] = {"model": f"{manifest.name}@{manifest.version}"}
    for det_name in detectors:
        cal_img: list[np.ndarray] = []
        cal_pts: list[np.ndarray] = []
        test: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # image, points, detector box
        for item in images:
            d = found[det_name][item.rel]
            m = match_faces(d.boxes, item.labelled)
            for g, split in enumerate(item.splits):
                if m[g] < 0:
                    continue
                if split == "train":
                    cal_img.append(np.asarray(d.boxes[m[g]]))
                    cal_pts.append(item.points[g])
                else:
                    test.append((load_image(cache, item.rel), item.points[g], d.boxes[m[g]]))
        if not test or len(cal_img) < 5:
            out[det_name] = {"faces": len(test), "note": "too few faces"}
            continue
        cal = _fit_from_pairs(np.stack(cal_img), cal_pts)
        gt = np.stack([t[1] for t in test])
        imgs = [t[0] for t in test]
        tight = tight_box(gt)
        from_det = cal.apply(np.stack([t[2] for t in test]))
        norm = np.asarray(scheme.normaliser_distance(gt, tight), dtype=np.float64)
        nme_tight = float(
            nme_per_sample(cascade_predict(run, stages, imgs, tight, scheme)[-1], gt, norm).mean()
        )
        first = cascade_predict(run, stages, imgs, from_det, scheme)[-1]
        nme_det = float(nme_per_sample(first, gt, norm).mean())
        # the service's path (refine="detector"): the cascade again from its own points' tight box
        second = cascade_predict(run, stages, imgs, tight_box(first), scheme)[-1]
        nme_refined = float(nme_per_sample(second, gt, norm).mean())
        out[det_name] = {
            "faces": len(test),
            "calibration": cal.to_dict(),
            "calibration_faces": len(cal_img),
            "nme_tight_boxes": round(nme_tight, 5),
            "nme_detector_boxes": round(nme_det, 5),
            "relative_change": round(nme_det / nme_tight - 1, 4),
            "nme_detector_boxes_refined": round(nme_refined, 5),
        }
    return out


def fit_detector_calibrations(
    detectors: dict[str, Detector],
    images: Sequence[RealImage],
    found: dict[str, dict[str, Detections]],
) -> dict[str, dict[str, Any]]:
    """Per detector and scheme: the box calibration fitted on the real *train* split's labelled faces
    the detector found (ibug68: tight box of the 68 points; aflw19: of the 19 points derived from them
    by ``train.data.face3d.aflw19_from_68``)."""
    from train.data.face3d import aflw19_from_68

    out: dict[str, dict[str, Any]] = {}
    for name in detectors:
        boxes: list[np.ndarray] = []
        pts: list[np.ndarray] = []
        for item in images:
            d = found[name][item.rel]
            m = match_faces(d.boxes, item.labelled)
            for g, split in enumerate(item.splits):
                if m[g] >= 0 and split == "train":
                    boxes.append(d.boxes[m[g]])
                    pts.append(item.points[g])
        if len(boxes) < 20:
            continue
        b = np.stack(boxes)
        schemes = {"ibug68": pts, "aflw19": [np.asarray(aflw19_from_68(p[None]))[0] for p in pts]}
        out[name] = {
            scheme: {**_fit_from_pairs(b, p).to_dict(), "fitted_on": len(b)} for scheme, p in schemes.items()
        }
    return out


def write_calibrations(cals: dict[str, dict[str, Any]], folder: Path, note: str) -> list[Path]:
    """``<folder>/<detector>/calibration.json`` for the CNN detectors and dlib_hog (whose own is read
    only by ssd_blazeface's fallback: each model's manifest holds dlib's)."""
    written = []
    for name, schemes in cals.items():
        target = folder / name
        if not (target / "source.json").is_file() and name != "dlib_hog":
            continue
        path = target / "calibration.json"
        path.write_text(json.dumps({"note": note, "schemes": schemes}, indent=1) + "\n")
        written.append(path)
    return written


def _fit_from_pairs(boxes: np.ndarray, points: Sequence[np.ndarray]) -> BoxCalibration:
    """Median offsets and scales from detector boxes [N, 4] to the tight boxes of ``points``."""
    t = tight_box(np.stack(points))
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return BoxCalibration(
        dx=float(np.median(((t[:, 0] + t[:, 2]) - (boxes[:, 0] + boxes[:, 2])) / 2 / bw)),
        dy=float(np.median(((t[:, 1] + t[:, 3]) - (boxes[:, 1] + boxes[:, 3])) / 2 / bh)),
        sw=float(np.median((t[:, 2] - t[:, 0]) / bw)),
        sh=float(np.median((t[:, 3] - t[:, 1]) / bh)),
    )


def montage(
    cache: Path, items: Sequence[tuple[str, np.ndarray, float]], path: Path, *, limit: int = 64
) -> None:
    """The unmatched detections as a grid of 112-px crops (1.4x the box), score written under each."""
    from PIL import Image, ImageDraw

    tile = 112
    items = list(items)[:limit]
    cols = 8
    rows = max(1, -(-len(items) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * (tile + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (rel, box, score) in enumerate(items):
        img = Image.open(cache / rel).convert("RGB")
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = 0.7 * max(box[2] - box[0], box[3] - box[1])
        crop = img.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))).resize((tile, tile))
        x, y = (k % cols) * tile, (k // cols) * (tile + 14)
        sheet.paste(crop, (x, y))
        draw.text((x + 2, y + tile), f"{score:.2f} {Path(rel).stem[:12]}", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["detectors"])
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    real = report.get("real", {})
    if real:
        ax = axes[0]
        bins = list(next(iter(real.values()))["recall_by_size"])
        for n in names:
            ys = [real[n]["recall_by_size"][b] for b in bins]
            ax.plot(bins, [np.nan if v is None else v for v in ys], marker="o", label=n)
        ax.set_title(f"real photos: recall by face size (px)\n({real[names[0]]['faces']} labelled faces)")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("face size sqrt(w*h) of the label's tight box")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    syn = report.get("synthetic", {})
    if syn:
        ax = axes[1]
        bins = list(next(iter(syn.values()))["recall_by_abs_yaw"])
        for n in names:
            ax.plot(bins, [syn[n]["recall_by_abs_yaw"][b] for b in bins], marker="o", label=n)
        ax.set_title("synthetic faces: recall by |yaw| (degrees)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    speed = report.get("speed", {})
    if speed:
        ax = axes[2]
        keys = list(next(iter(speed.values())))
        x = np.arange(len(names))
        for k, key in enumerate(keys):
            ax.bar(
                x + k * 0.38,
                [speed[n][key]["cpu_ms"] for n in names],
                width=0.38,
                label=key.replace("_", " "),
            )
        ax.set_xticks(x + 0.19, names, fontsize=8)
        ax.set_ylabel("CPU ms per 1920x1080 JPEG, decode + detect (1 thread)")
        ax.set_title(f"speed: {report['cpu']['model']}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from tools.studies.real_bench import default_cache

    parser = argparse.ArgumentParser(prog="wingmark data detect-bench", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--detectors", type=str, default=",".join(DETECTORS))
    parser.add_argument("--max-frames", type=int, default=300, help="video frames, evenly spaced")
    parser.add_argument("--synthetic", type=int, default=600, help="synthetic faces (0: skip)")
    parser.add_argument(
        "--min-face", type=float, default=TEACHER_MIN_FACE, help="px, passed to every detector"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--model", type=str, default="cnn67-ibug68", help="ibug68 model for the NME check ('' skips)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "detect_bench")
    parser.add_argument(
        "--montage-dir",
        type=Path,
        default=REPO / "cache" / "detect_bench",
        help="where the unmatched-detection montages go (photos of people: kept out of git)",
    )
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument(
        "--write-calibration",
        action="store_true",
        help="write model_store/detectors/<name>/calibration.json (fitted on the real train split)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.detectors.split(",") if n]
    detectors: dict[str, Detector] = {}
    for n in names:
        det = create_detector(n)
        assert det is not None
        detectors[n] = det
    report: dict[str, Any] = {
        "detectors": names,
        "cpu": cpu_info(),
        "min_face": args.min_face,
        "match_iou": MATCH_IOU,
        "truth": "teachers' faces (dlib HOG + 68 points, kept where MediaPipe agrees), not human labels",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    t0 = time.time()
    report["speed"] = bench_speed(
        detectors, speed_image(), min_faces=sorted({80.0, args.min_face}), repeats=args.repeats
    )
    print(json.dumps(report["speed"]), flush=True)
    if not args.skip_real:
        images = real_images(args.cache_dir, max_frames=args.max_frames)
        report["real_images"] = {
            "stills": sum(i.kind == "still" for i in images),
            "video_frames": sum(i.kind == "video" for i in images),
            "labelled_faces": int(sum(len(i.labelled) for i in images)),
        }
        real, found, unmatched = bench_real(detectors, args.cache_dir, images, min_face=args.min_face)
        report["real"] = real
        for n, items in unmatched.items():
            montage(
                args.cache_dir, sorted(items, key=lambda t: -t[2]), args.montage_dir / f"unmatched_{n}.png"
            )
        cals = fit_detector_calibrations(detectors, images, found)
        report["calibrations"] = cals
        if args.write_calibration:
            from runtime.detectors.cnn import detector_dir

            note = (
                f"median detector box -> tight label box, real train split ({report['created']}, "
                f"min_face {args.min_face}); wingmark data detect-bench --write-calibration"
            )
            report["calibration_files"] = [str(p) for p in write_calibrations(cals, detector_dir(), note)]
        if args.model:
            report["landmarks"] = bench_landmarks(detectors, args.cache_dir, images, found, args.model)
    if args.synthetic:
        report["synthetic"] = bench_synthetic(detectors, args.synthetic, min_face=args.min_face)
    report["seconds"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detect_bench.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out / "detect_bench.png")
    print(
        json.dumps(
            {k: v for k, v in report.items() if k in ("speed", "real", "synthetic", "landmarks")}, indent=1
        )
    )
    return 0
