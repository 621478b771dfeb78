"""68-point models against human-annotated photos of your own (``wingmark data photos DIR``).

The project's own figures are measured against exact labels (synthetic faces) or teacher labels
(``wingmark data bench``); neither is human annotation. Whoever has photos with human iBUG 68-point
labels measures a model on them here, in the three ways a user meets it:

- ``tight``: the tight box of the labels sent as the client box (the documented box convention);
- ``hog_client_box``: dlib's HOG detection sent as the client box (a user with their own detector;
  dlib's usual call, ``detector(image, 1)``, else upsampling 0 then 2 until a detection overlaps the
  labels, IoU >= ``MATCH_IOU``);
- ``detector:NAME``: the service's own detection with that registered detector, the found face that
  overlaps the labels (a photo where none does counts as missed, not as an error).

Reference rows where the dlib 68-point predictor is at hand (``--predictor``, default the real-face
cache's copy): ``dlib`` from that same HOG box, and ``dlib_tight`` from the tight box.

Labels: beside each image, ``STEM.pts`` (iBUG, 1-based pixel positions) or ``STEM.ljson`` (menpo
LJSON, (y, x) with pixel centres at integers; its face label groups give the iBUG order). NME is
inter-ocular (outer eye corners), as 300-W's. Nothing here is trained on or tuned to such photos.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model_store.geometry import tight_box
from runtime.detectors.base import box_from_dlib_rect, dlib_rect_from_box, points_from_dlib_shape
from tools.studies import inter_ocular
from tools.studies.detect_bench_core import match_faces
from tools.studies.real_bench import default_cache, write_report
from train.data.pts300w import read_pts
from train.data.real import REGIONS
from train.data.scan import ibug68_order, read_ljson

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelledPhoto",
    "bench_photos",
    "find_photos",
    "hog_box",
    "main",
    "read_labels",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = (".pts", ".ljson")
HOG_UPSAMPLES = (1, 0, 2)  # dlib's usual call first
DEFAULT_DETECTORS = ("ssd_blazeface", "dlib_hog")


@dataclass(frozen=True)
class LabelledPhoto:
    name: str  # the label file's path relative to the folder
    image: Path
    labels: Path


def read_labels(path: Path | str) -> np.ndarray:
    """An iBUG ``.pts`` or menpo ``.ljson`` file -> [68, 2] float64 in model_store pixel coordinates
    (origin at the top-left pixel's corner)."""
    path = Path(path)
    if path.suffix.lower() == ".pts":
        points = read_pts(path).astype(np.float64)
    elif path.suffix.lower() == ".ljson":
        raw, labels = read_ljson(path)
        if raw.ndim != 2 or raw.shape[1] != 2:
            raise ValueError(f"{path}: expected 2-D image points, got {raw.shape[1]}-D")
        points = raw[ibug68_order(labels, len(raw))][:, ::-1] + 0.5  # menpo (y, x), centres at integers
    else:
        raise ValueError(f"{path}: not a .pts or .ljson file")
    if points.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points (iBUG), got {points.shape[0]}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{path}: some of the 68 points are missing")
    return points


def find_photos(folder: Path | str) -> list[LabelledPhoto]:
    """Every label file under ``folder`` (recursively) with an image of the same stem beside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    photos: list[LabelledPhoto] = []
    for labels in sorted(p for p in folder.rglob("*") if p.suffix.lower() in LABEL_SUFFIXES):
        images = [p for p in labels.parent.glob(labels.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise FileNotFoundError(f"{labels}: no image beside it ({', '.join(IMAGE_SUFFIXES)})")
        photos.append(LabelledPhoto(str(labels.relative_to(folder)), sorted(images)[0], labels))
    if not photos:
        raise FileNotFoundError(f"{folder}: no .pts or .ljson label files")
    return photos


def hog_box(detect: Any, pixels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int] | None:
    """dlib HOG's box for the labelled face: ``([4] x1, y1, x2, y2, upsample)`` or None.

    ``detect(pixels, upsample)`` is dlib's frontal face detector; its rectangles hold inclusive pixel
    indices (:func:`~runtime.detectors.base.box_from_dlib_rect` gives our corners)."""
    for upsample in HOG_UPSAMPLES:
        rects = detect(pixels, upsample)
        boxes = np.asarray([box_from_dlib_rect(r) for r in rects], np.float64)
        found = match_faces(boxes.reshape(-1, 4), truth[None])
        if found[0] >= 0:
            return boxes[found[0]], upsample
    return None


def hog_boxes(images: Sequence[np.ndarray], tight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hog_box` of each labelled face (its tight box ``tight`` ``[N, 4]``): found ``[N]`` bool and
    the boxes ``[N, 4]`` (zeros where none)."""
    import dlib

    detect = dlib.get_frontal_face_detector()
    found = np.zeros(len(images), bool)
    boxes = np.zeros((len(images), 4))
    for i, (image, box) in enumerate(zip(images, tight, strict=True)):
        hit = hog_box(detect, np.ascontiguousarray(image), box)
        if hit is not None:
            found[i], boxes[i] = True, hit[0]
    return found, boxes


def _nme(points: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(points - truth, axis=1).mean() / inter_ocular(truth))


def _regions(points: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    dist = np.linalg.norm(points - truth, axis=1) / inter_ocular(truth)
    return {r: round(float(dist[a:b].mean()), 5) for r, (a, b) in REGIONS.items()}


def _mean(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return {"nme": float(np.mean(values)) if values else None, "faces": len(values), "of": len(rows)}


def bench_photos(
    folder: Path | str,
    models: Sequence[str],
    *,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    predictor: Path | None = None,
    store: Any = None,
    views: int = 1,
    refine: str = "detector",
) -> dict[str, Any]:
    """Per photo and in the mean: each model's NME from the tight box, dlib HOG's box as the client
    box and each detector; dlib's own predictor as the reference where ``predictor`` exists. ``views``:
    the last stage's crops per face (``runtime.cascade.VIEWS``); ``refine``: which faces get the second
    pass (``runtime.landmarker.REFINE``; ``always`` gives the tight and HOG client boxes one too)."""
    import dlib

    from runtime.landmarker import Landmarker

    photos = find_photos(folder)
    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(predictor)) if predictor is not None and predictor.exists() else None
    loaded: list[tuple[LabelledPhoto, np.ndarray, np.ndarray, tuple[np.ndarray, int] | None]] = []
    for photo in photos:
        truth = read_labels(photo.labels)
        with Image.open(photo.image) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
        loaded.append((photo, truth, pixels, hog_box(hog, pixels, tight_box(truth).astype(np.float64))))
    report: dict[str, Any] = {
        "folder": str(folder),
        "truth": "the photos' own labels (human annotation where the photos' source says so)",
        "nme": "inter-ocular (outer eye corners 36, 45), per face; means over the faces each way found",
        "photos": {
            p.name: {
                "image": str(p.image),
                "inter_ocular_px": round(inter_ocular(t), 2),
                "hog_upsample": None if h is None else h[1],
            }
            for p, t, _, h in loaded
        },
        "models": {},
    }
    if shape is not None:
        rows: list[dict[str, Any]] = []
        for _, truth, pixels, hog_found in loaded:
            row: dict[str, Any] = {}
            for key, box in (
                ("dlib", None if hog_found is None else hog_found[0]),
                ("dlib_tight", tight_box(truth)),
            ):
                if box is not None:
                    row[key] = _nme(points_from_dlib_shape(shape(pixels, dlib_rect_from_box(box))), truth)
            rows.append(row)
        report["reference_dlib_68_predictor"] = {
            "predictor": str(predictor),
            "per_photo": dict(zip(report["photos"], rows, strict=True)),
            "mean": {k: _mean(rows, k) for k in ("dlib", "dlib_tight")},
        }
    for spec in models:
        name, _, version = spec.partition("@")
        with Landmarker.from_store(
            name, version=version or "latest", store=store, detector=None, views=views, refine=refine
        ) as with_box:
            if with_box.scheme != "ibug68":
                raise ValueError(f"{spec}: a {with_box.scheme} model; human photos here carry iBUG 68 points")
            rows, regions = _model_rows(with_box, loaded, detectors)
        keys = ["tight", "hog_client_box", *(f"detector:{d}" for d in detectors)]
        viewed = f", {with_box.cascade.views} views" if with_box.cascade.views > 1 else ""
        viewed += f", refine {refine}" if refine != "detector" else ""
        report["models"][f"{with_box.name}@{with_box.version}{viewed}"] = {
            "per_photo": dict(zip(report["photos"], rows, strict=True)),
            "regions_tight": regions,
            "mean": {k: _mean(rows, k) for k in keys},
        }
    return report


def _model_rows(
    with_box: Any,
    loaded: Sequence[tuple[LabelledPhoto, np.ndarray, np.ndarray, Any]],
    detectors: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """One model's NME per photo (tight box, HOG's box as the client box, each detector) and the tight-box
    NME per face region."""
    from runtime.landmarker import Landmarker

    rows: list[dict[str, Any]] = [{} for _ in loaded]
    regions: dict[str, dict[str, float]] = {}
    for row, (photo, truth, pixels, hog_found) in zip(rows, loaded, strict=True):
        points = with_box.predict(pixels, tight_box(truth)[None])[0].landmarks
        row["tight"] = _nme(points, truth)
        regions[photo.name] = _regions(points, truth)
        if hog_found is not None:
            row["hog_client_box"] = _nme(with_box.predict(pixels, hog_found[0][None])[0].landmarks, truth)
    for det in detectors:
        # shares the backend, the views and the refine setting
        finder = Landmarker(
            with_box.model, with_box.backend, _create_detector(det), with_box.refine, with_box.cascade.views
        )
        for row, (_, truth, pixels, _) in zip(rows, loaded, strict=True):
            faces = finder.predict(pixels)
            boxes = np.asarray([f.box for f in faces], np.float64).reshape(-1, 4)
            match = match_faces(boxes, tight_box(truth).astype(np.float64)[None])[0]
            row[f"detector:{det}"] = None if match < 0 else _nme(faces[match].landmarks, truth)
    return rows, regions


def _create_detector(name: str) -> Any:
    from runtime.detectors import create_detector

    return create_detector(name)


def table(report: dict[str, Any]) -> str:
    """A Markdown table: one row per model (and the dlib reference), the mean NME each way, % (found/all)."""

    def cell(block: dict[str, Any]) -> str:
        if block["nme"] is None:
            return f"- (0/{block['of']})"
        return f"{100 * block['nme']:.2f} ({block['faces']}/{block['of']})"

    keys: list[str] = []
    for entry in report["models"].values():
        keys += [k for k in entry["mean"] if k not in keys]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for model, entry in report["models"].items():
        lines.append(
            f"| {model} | "
            + " | ".join(cell(entry["mean"][k]) if k in entry["mean"] else "-" for k in keys)
            + " |"
        )
    ref = report.get("reference_dlib_68_predictor")
    if ref is not None:
        mean = ref["mean"]
        lines.append(
            f"| dlib 68-point predictor (reference) | {cell(mean['dlib_tight'])} | {cell(mean['dlib'])} |"
            + " - |" * (len(keys) - 2)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from model_store.store import ModelStore
    from runtime.cascade import VIEWS
    from runtime.landmarker import REFINE

    parser = argparse.ArgumentParser(prog="wingmark data photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="images with .pts or .ljson (68 iBUG points) beside them")
    parser.add_argument("--models", default="faceapi-ibug68", help="NAME[@VERSION],... (68-point models)")
    parser.add_argument(
        "--detectors",
        default=",".join(DEFAULT_DETECTORS),
        help="registered detectors, comma list ('' for none)",
    )
    parser.add_argument(
        "--predictor",
        type=Path,
        default=default_cache() / "models" / "shape_predictor_68_face_landmarks.dat",
        help="dlib's 68-point predictor for the reference rows (skipped where the file is absent)",
    )
    parser.add_argument("--store", type=Path)
    parser.add_argument("--views", type=int, choices=VIEWS, default=1, help="the last stage's crops per face")
    parser.add_argument(
        "--refine",
        choices=REFINE,
        default="detector",
        help="which faces get the second pass (always: every box)",
    )
    parser.add_argument("--json", type=Path, default=Path("runs/photo_bench/photo_bench.json"))
    args = parser.parse_args(argv)
    try:
        report = bench_photos(
            args.folder,
            [m for m in args.models.split(",") if m],
            detectors=[d for d in args.detectors.split(",") if d],
            predictor=args.predictor,
            store=ModelStore(args.store) if args.store else None,
            views=args.views,
            refine=args.refine,
        )
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    return write_report(report, table(report), args.json)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
