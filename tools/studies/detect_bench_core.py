"""The inputs and measurements of ``wingmark data detect-bench`` (:mod:`tools.studies.detect_bench`):
the real photos and their teachers' faces, matching detections to faces, recall on real and synthetic
faces, speed on a 1080p photo."""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from runtime.detectors import Detections, Detector, box_iou

__all__ = [
    "MATCH_IOU",
    "REPO",
    "TEACHER_MIN_FACE",
    "RealImage",
    "bench_real",
    "bench_speed",
    "bench_synthetic",
    "cpu_info",
    "decode_and_detect",
    "load_image",
    "match_faces",
    "real_images",
    "speed_image",
]

MATCH_IOU = 0.3
TEACHER_MIN_FACE = 40.0  # train.data.real.MIN_FACE: dlib boxes below are not labelled
SIZE_BINS = (40.0, 64.0, 96.0, 128.0, 256.0, float("inf"))
YAW_BINS = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0)
SYNTHETIC_SIZE = 384
SYNTHETIC_FACE_FRACTION = (0.2, 0.28)
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RealImage:
    rel: str  # path inside the cache
    source: str
    kind: str  # still | video
    labelled: np.ndarray  # [G, 4] tight boxes of the kept faces' labels
    labelled_ids: list[str]
    known: np.ndarray  # [K, 4] dlib boxes of every face the teacher found (kept or not)
    points: list[np.ndarray] = field(default_factory=list)  # [68, 2] per labelled face
    splits: list[str] = field(default_factory=list)  # train | test per labelled face


def real_images(cache: Path, *, max_frames: int = 300) -> list[RealImage]:
    """Every still photo in ``<cache>/images/<source>/`` and ``max_frames`` video frames, with the
    teachers' faces from the manifest."""
    from train.data.pts300w import read_pts
    from train.data.real import load_manifest
    from train.data.real_sources import IMAGE_SUFFIXES

    manifest = load_manifest(cache)
    by_image: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for face in manifest["faces"]:
        by_image[face["image"]].append(face)
    root = cache / "images"
    stills = sorted(
        p.relative_to(cache).as_posix()
        for p in root.glob("*/*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    # frames: only those the teachers looked at (the build samples frames of each video); the dlib
    # teacher's cache lists every image it ran on, with or without faces
    teacher_cache = cache / "work" / "dlib.json"
    looked_at = set(json.loads(teacher_cache.read_text())) if teacher_cache.is_file() else set(by_image)
    frames = sorted(
        p.relative_to(cache).as_posix()
        for p in root.glob("*/frames/*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.relative_to(cache).as_posix() in looked_at
    )
    if max_frames < len(frames):
        frames = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, max(0, max_frames)).round()]
    out: list[RealImage] = []
    for rel in stills + frames:
        faces = by_image.get(rel, [])
        kept = [f for f in faces if f.get("kept")]
        pts = [read_pts(cache / f["pts"]).astype(np.float64) for f in kept]
        out.append(
            RealImage(
                rel=rel,
                source=rel.split("/")[1],
                kind="video" if "/frames/" in rel else "still",
                labelled=tight_box(np.stack(pts)) if pts else np.zeros((0, 4)),
                labelled_ids=[f["id"] for f in kept],
                known=np.asarray([f["box"] for f in faces], dtype=np.float64).reshape(-1, 4),
                points=pts,
                splits=[f["split"] for f in kept],
            )
        )
    return out


def match_faces(dets: np.ndarray, truth: np.ndarray, min_iou: float = MATCH_IOU) -> np.ndarray:
    """Greedy one-to-one matching by IoU -> [G] index of the detection matched to each truth box, or -1."""
    out = np.full(len(truth), -1, dtype=np.int64)
    if len(dets) == 0 or len(truth) == 0:
        return out
    iou = box_iou(truth, dets)  # [G, D]
    pairs = sorted(((iou[g, d], g, d) for g in range(len(truth)) for d in range(len(dets))), reverse=True)
    used: set[int] = set()
    for v, g, d in pairs:
        if v < min_iou:
            break
        if out[g] >= 0 or d in used:
            continue
        out[g] = d
        used.add(d)
    return out


def _side(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))


def _bin_label(lo: float, hi: float) -> str:
    return f"{lo:.0f}+" if hi == float("inf") else f"{lo:.0f}-{hi:.0f}"


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def load_image(cache: Path, rel: str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(cache / rel) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def bench_real(
    detectors: dict[str, Detector],
    cache: Path,
    images: Sequence[RealImage],
    *,
    min_face: float,
    log: Any = print,
) -> tuple[dict[str, Any], dict[str, dict[str, Detections]], dict[str, list[tuple[str, np.ndarray, float]]]]:
    """-> (report per detector, detections per detector and image, unmatched (image, box, score) each)."""
    found: dict[str, dict[str, Detections]] = {name: {} for name in detectors}
    seconds: dict[str, float] = defaultdict(float)
    for n, item in enumerate(images):
        data = (cache / item.rel).read_bytes()
        for name, det in detectors.items():
            t0 = time.perf_counter()
            found[name][item.rel] = decode_and_detect(det, data, min_face)
            seconds[name] += time.perf_counter() - t0
        if (n + 1) % 50 == 0 or n + 1 == len(images):
            log(f"real: {n + 1}/{len(images)} images")
    report: dict[str, Any] = {}
    unmatched_all: dict[str, list[tuple[str, np.ndarray, float]]] = {}
    for name in detectors:
        hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # key -> [found, total]
        detections = unmatched = false_pos = 0
        fp_images = 0
        unmatched_list: list[tuple[str, np.ndarray, float]] = []
        for item in images:
            d = found[name][item.rel]
            m = match_faces(d.boxes, item.labelled)
            sizes = _side(item.labelled)
            for g in range(len(item.labelled)):
                ok = int(m[g] >= 0)
                keys = ["all", f"source:{item.source}", f"kind:{item.kind}"]
                for lo, hi in itertools.pairwise(SIZE_BINS):
                    if lo <= sizes[g] < hi:
                        keys.append(f"size:{_bin_label(lo, hi)}")
                for k in keys:
                    hits[k][0] += ok
                    hits[k][1] += 1
            used = set(int(v) for v in m if v >= 0)
            rest = [i for i in range(len(d.boxes)) if i not in used]
            if rest and len(item.known):
                iou = box_iou(d.boxes[rest], item.known)
                rest = [i for i, row in zip(rest, iou, strict=True) if row.max() < MATCH_IOU]
            detections += len(d.boxes)
            unmatched += len(rest)
            big = [i for i in rest if _side(d.boxes[i])[0] >= TEACHER_MIN_FACE]
            false_pos += len(big)
            fp_images += bool(big)
            unmatched_list += [(item.rel, d.boxes[i], float(d.scores[i])) for i in rest]
        total = hits["all"][1]
        report[name] = {
            "recall": _ratio(*hits["all"]) if total else None,
            "faces": total,
            "found": hits["all"][0],
            "missed": total - hits["all"][0],
            "recall_by_source": {
                k[7:]: _ratio(*v) for k, v in sorted(hits.items()) if k.startswith("source:")
            },
            "faces_by_source": {k[7:]: v[1] for k, v in sorted(hits.items()) if k.startswith("source:")},
            "recall_by_kind": {k[5:]: _ratio(*v) for k, v in sorted(hits.items()) if k.startswith("kind:")},
            "recall_by_size": {
                _bin_label(lo, hi): _ratio(*hits[f"size:{_bin_label(lo, hi)}"])
                for lo, hi in itertools.pairwise(SIZE_BINS)
            },
            "faces_by_size": {
                _bin_label(lo, hi): hits[f"size:{_bin_label(lo, hi)}"][1]
                for lo, hi in itertools.pairwise(SIZE_BINS)
            },
            "detections": detections,
            "unmatched": unmatched,
            "false_positives": false_pos,
            "false_positives_per_100_images": round(100 * false_pos / max(1, len(images)), 3),
            "images_with_false_positive": fp_images,
            "precision": _ratio(detections - unmatched, detections),
            "precision_faces_40px_up": _ratio(detections - false_pos, detections),
            "seconds": round(seconds[name], 2),
        }
        unmatched_all[name] = unmatched_list
    return report, found, unmatched_all


def bench_synthetic(
    detectors: dict[str, Detector], num: int, *, seed: int = 7, min_face: float, log: Any = print
) -> dict[str, Any]:
    """Recall per |yaw| bin on ``num`` synthetic 384x384 faces with yaw uniform in +-90 degrees.

    The faces are rendered smaller than for training (chin-to-brow 20-28 % of the image, not 34-48 %):
    detectors look for a face with some scene around it, and all of them miss many faces that fill
    the frame. Occluders, blur and noise as in training.
    """
    from train.data.render import RenderOptions
    from train.data.synthetic import PoseDistribution, SyntheticFaces

    faces = SyntheticFaces(
        "ibug68",
        num,
        seed,
        image_size=SYNTHETIC_SIZE,
        pose=PoseDistribution.uniform_yaw(90.0),
        options=RenderOptions(face_fraction=SYNTHETIC_FACE_FRACTION),
    )
    hits: dict[str, dict[str, list[int]]] = {n: defaultdict(lambda: [0, 0]) for n in detectors}
    unmatched: dict[str, int] = defaultdict(int)
    for i in range(num):
        s = faces[i]
        yaw = abs(float(s.meta["yaw"]))
        b = next(_bin_label(lo, hi) for lo, hi in itertools.pairwise(YAW_BINS) if yaw <= hi)
        truth = tight_box(np.asarray(s.points, dtype=np.float64))[None]
        for name, det in detectors.items():
            d = det.detect(s.image, min_face=min_face)
            ok = int(match_faces(d.boxes, truth)[0] >= 0)
            hits[name][b][0] += ok
            hits[name][b][1] += 1
            unmatched[name] += len(d.boxes) - ok
        if (i + 1) % 100 == 0 or i + 1 == num:
            log(f"synthetic: {i + 1}/{num}")
    return {
        name: {
            "recall_by_abs_yaw": {
                k: _ratio(*v) for k, v in sorted(h.items(), key=lambda kv: float(kv[0].split("-")[0]))
            },
            "faces_by_abs_yaw": {
                k: v[1] for k, v in sorted(h.items(), key=lambda kv: float(kv[0].split("-")[0]))
            },
            "recall_45_75": _ratio(
                sum(v[0] for k, v in h.items() if k in ("45-60", "60-75")),
                sum(v[1] for k, v in h.items() if k in ("45-60", "60-75")),
            ),
            "unmatched_per_image": round(unmatched[name] / max(1, num), 4),
        }
        for name, h in hits.items()
    }


def speed_image() -> bytes:
    """A 1920x1080 JPEG (quality 90): face-api's demo sample1.jpg (1920x1280, 3 faces) cut to 1080 rows."""
    import io

    from PIL import Image

    from train.export.detectors import FACE_API, default_cache, fetch_npm

    root = fetch_npm(*FACE_API, default_cache())
    img = load_image(root / "demo", "sample1.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img[100:1180, :1920])).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decode_and_detect(detector: Detector, data: bytes, min_face: float) -> Detections:
    """What the service does for a JPEG without boxes: decode at the detector's working size
    (``decode_reduction``; full size for a detector without one), detect with ``min_face`` in the
    decoded pixels; -> faces in the original (upright) image's pixels."""
    from runtime.decode import decode_image, jpeg_size

    size = jpeg_size(data)
    own = getattr(detector, "decode_reduction", None)
    reduce = int(own(size[0], size[1], min_face)) if size is not None and callable(own) else 1
    image = decode_image(data, max_pixels=100_000_000, reduce=reduce)
    d = detector.detect(image.pixels, min_face=min_face / image.scale_x)
    sx, sy = image.scale_x, image.scale_y
    if sx == 1.0 and sy == 1.0:
        return d
    kps = None if d.keypoints is None else d.keypoints * np.array([sx, sy])
    return Detections(d.boxes * np.array([sx, sy, sx, sy]), d.scores, kps)


def bench_speed(
    detectors: dict[str, Detector], data: bytes, *, min_faces: Sequence[float], repeats: int = 7
) -> dict[str, Any]:
    """Decoding the JPEG ``data`` plus detecting, as the service does (:func:`decode_and_detect`):
    median wall ms and CPU ms (this thread's: one ONNX Runtime / dlib thread, so the load of other
    processes on the machine leaves it nearly alone) per image and per megapixel, after one warm-up run
    each. The detectors take turns run by run, so a change in the machine's load hits them alike."""
    from runtime.decode import jpeg_size

    size = jpeg_size(data)
    assert size is not None
    mp = size[0] * size[1] / 1e6
    wall: dict[tuple[str, float], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, float], list[float]] = defaultdict(list)
    faces: dict[tuple[str, float], int] = {}
    reduce: dict[tuple[str, float], int] = {}
    for name, det in detectors.items():
        for mf in min_faces:
            faces[name, mf] = len(decode_and_detect(det, data, mf).boxes)
            own = getattr(det, "decode_reduction", None)
            reduce[name, mf] = int(own(size[0], size[1], mf)) if callable(own) else 1
    for _ in range(repeats):
        for name, det in detectors.items():
            for mf in min_faces:
                t0, c0 = time.perf_counter(), time.thread_time()
                decode_and_detect(det, data, mf)
                cpu[name, mf].append((time.thread_time() - c0) * 1000)
                wall[name, mf].append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {}
    for name in detectors:
        out[name] = {
            f"min_face_{mf:g}": {
                "ms": round(float(np.median(wall[name, mf])), 1),
                "ms_per_megapixel": round(float(np.median(wall[name, mf])) / mp, 1),
                "cpu_ms": round(float(np.median(cpu[name, mf])), 1),
                "jpeg_reduction": reduce[name, mf],
                "faces": faces[name, mf],
            }
            for mf in min_faces
        }
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return out


def cpu_info() -> dict[str, Any]:
    model = platform.processor() or ""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = sorted(f for f in have if f.startswith(("avx", "fma", "sse4", "f16c", "amx")))
    except OSError:
        pass
    return {"model": model, "flags": flags, "cpus": os.cpu_count(), "threads_used": 1}
