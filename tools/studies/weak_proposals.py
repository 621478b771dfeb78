"""Could ``ssd_blazeface`` keep SSD's weak proposals that BlazeFace's second look confirms?

    python -m tools.studies.weak_proposals --out docs/detect_bench/weak_proposals.json [--extra IMG.jpg ...]

``ssd_blazeface`` drops SSD's proposals under its 0.3 threshold. A face SSD scores lower (a small face in an
old greyscale photo) is then found only if BlazeFace's whole view finds it. This study lowers SSD's threshold
to ``--weak`` and, for every proposal between the two that no face the detector keeps covers, runs the
second look and records its score: how far the faces among them stand from the non-faces. (At the lower
threshold SSD skips its context views once its whole view holds any proposal, as it does once it has a face.)
Data: the detector bench's real images (every still photo of the real-face cache and ``--max-frames``
video frames, at ``min_face`` 40 as the bench runs); a proposal overlapping a face the teacher's detector
found (IoU >= 0.3) counts as that face, the rest were looked at by eye. ``--extra`` adds images of your own
(each with an iBUG ``.pts`` of one face beside it): their labelled face's proposal and its second look.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model_store.geometry import tight_box
from runtime.detectors import create_detector
from runtime.detectors.base import box_iou
from runtime.detectors.ssd_blazeface import COVERED, SsdBlazeFaceDetector, covered
from tools.studies import write_json
from tools.studies.real_bench import default_cache
from train.data.pts300w import read_pts

__all__ = ["main", "weak_proposals"]

ON_FACE_IOU = 0.3  # a proposal overlapping a teacher's face this much is that face (or a part of it)


def weak_proposals(
    detector: SsdBlazeFaceDetector, image: np.ndarray, *, weak: float, min_face: float | None = None
) -> list[dict[str, Any]]:
    """SSD's proposals scoring from ``weak`` up to its threshold that none of ``detector``'s faces covers
    (intersection over the smaller box >= COVERED) -> their boxes, SSD scores and second-look scores (0:
    BlazeFace found nothing there); ``detector`` is left as it was."""
    kept = detector.detect(image, min_face=min_face).boxes
    ssd = detector.ssd
    threshold = ssd.score_threshold
    ssd.score_threshold = weak
    try:
        found = ssd.detect(image, min_face=min_face)
    finally:
        ssd.score_threshold = threshold
    out = []
    for box, score in zip(found.boxes, found.scores, strict=True):
        if score >= threshold or (len(kept) and covered(box, kept).max() >= COVERED):
            continue
        confirm, _ = detector.second_look(image, box)
        out.append({"box": [round(float(v), 1) for v in box], "ssd": float(score), "second_look": confirm})
    return out


def main(argv: list[str] | None = None) -> int:
    from tools.studies.detect_bench_core import TEACHER_MIN_FACE, load_image, real_images

    parser = argparse.ArgumentParser(
        prog="python -m tools.studies.weak_proposals", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--max-frames", type=int, default=40)
    parser.add_argument("--weak", type=float, default=0.05)
    parser.add_argument("--extra", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    detector = create_detector("ssd_blazeface")
    assert isinstance(detector, SsdBlazeFaceDetector)
    rows: list[dict[str, Any]] = []
    images = real_images(args.cache_dir, max_frames=args.max_frames)
    for im in images:
        known = np.concatenate([im.labelled, im.known]).reshape(-1, 4)
        for p in weak_proposals(detector, load_image(args.cache_dir, im.rel), weak=args.weak,
                                min_face=TEACHER_MIN_FACE):  # fmt: skip
            iou = box_iou(np.asarray(p["box"])[None], known)[0] if len(known) else np.zeros(1)
            rows.append(p | {"image": im.rel, "on_teacher_face": bool(iou.max() >= ON_FACE_IOU)})
    confirmed = [r for r in rows if r["second_look"] > 0]
    off = sorted(round(r["second_look"], 3) for r in confirmed if not r["on_teacher_face"])
    report: dict[str, Any] = {
        "images": len(images),
        "weak": args.weak,
        "ssd_threshold": detector.ssd.score_threshold,
        "proposals": len(rows),
        "confirmed": len(confirmed),
        "confirmed_off_teacher_faces_second_look": off,
        "rows": rows,
        "extra": {},
    }
    print(f"{len(images)} images: {len(rows)} weak proposals, {len(confirmed)} confirmed by the second look")
    print(f"  off the teachers' faces ({len(off)}), second-look scores: {off}")
    for path in args.extra:
        image = np.asarray(Image.open(path).convert("RGB"))
        tight = tight_box(read_pts(path.with_suffix(".pts")))[None]
        hits = [
            p
            for p in weak_proposals(detector, image, weak=args.weak)
            if box_iou(np.asarray(p["box"])[None], tight)[0, 0] >= ON_FACE_IOU
        ]
        report["extra"][path.name] = hits
        print(f"  {path.name}: the labelled face's weak proposals {hits}")
    if args.out is not None:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
