"""Throughput of ``wingmark batch`` (runtime.batch.BatchJob) against the bare in-process pipeline.

    python -m tools.studies.batch_throughput [FOLDER] [--repeats 2]
        -> docs/batch_throughput.json (docs/benchmarks.md quotes it)

The bare pipeline is the loop a user would write around the facade, one image at a time, one
thread: ``read -> decode_image -> Landmarker.predict`` (detect, calibrate, cascade). The batch job
runs the same images with its defaults (decode + detect threads on every core, faces of several
images in one network call) and writes Parquet, which the bare loop does not. Both use the same
landmarker (ONNX Runtime, one intra-op thread; dlib's HOG detector). Runs alternate (bare, batch,
bare, batch, ...) so that other processes' load falls on both; the median run of each is reported,
by wall clock and by CPU time (all threads), which the machine's other load disturbs less.

FOLDER defaults to the still photos of the real-face cache (``images/<source>/*`` without the
extracted video frames).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime import Landmarker, decode_image
from runtime.batch import BatchJob, BatchOptions, expand_inputs
from runtime.batch.inputs import IMAGE_SUFFIXES, is_video
from tools.studies.batch_tracking import REPO, _cpu_model

__all__ = ["bare_loop", "main"]

CACHE = Path("/work/main/cache/real/images")


def default_images() -> list[Path]:
    return [p for p in sorted(CACHE.glob("*/*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def bare_loop(landmarker: Landmarker, images: list[Path]) -> tuple[float, int]:
    """(seconds, faces) of the plain loop over ``images``."""
    started = time.perf_counter()
    faces = 0
    for path in images:
        try:
            image = decode_image(path.read_bytes(), max_pixels=40_000_000, max_side=2048)
        except ValueError:
            continue
        faces += len(landmarker.predict(image))
    return time.perf_counter() - started, faces


def batch_run(landmarker: Landmarker, images: list[Path], out: Path) -> tuple[float, int]:
    summary = BatchJob(landmarker, BatchOptions()).run(images, out, resume=False, progress=False)
    return summary.seconds, summary.faces


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.studies.batch_throughput")
    p.add_argument("folder", nargs="?", type=Path, help="images (default: the real-face cache's photos)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path, default=REPO / "docs" / "batch_throughput.json")
    args = p.parse_args(argv)
    images = expand_inputs([args.folder]) if args.folder else default_images()
    images = [i for i in images if not is_video(i)]
    workers = os.cpu_count() or 1
    landmarker = Landmarker.from_store("cnn67-ibug68", detector_options={"instances": workers})
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "batch": []}
    with tempfile.TemporaryDirectory() as tmp:
        bare_loop(landmarker, images[:3])  # warm both paths up
        for _ in range(args.repeats):
            for mode in ("bare", "batch"):
                cpu0 = time.process_time()
                seconds, faces = (
                    bare_loop(landmarker, images)
                    if mode == "bare"
                    else batch_run(landmarker, images, Path(tmp) / "out.parquet")
                )  # fmt: skip
                cpu = time.process_time() - cpu0
                runs[mode].append(
                    {
                        "seconds": round(seconds, 3),
                        "cpu_seconds": round(cpu, 3),
                        "images_per_second": round(len(images) / seconds, 3),
                        "images_per_cpu_second": round(len(images) / cpu, 3),
                        "faces": faces,
                    }
                )
                print(mode, runs[mode][-1], flush=True)
    landmarker.close()
    median = {m: statistics.median(r["images_per_second"] for r in rs) for m, rs in runs.items()}
    median_cpu = {m: statistics.median(r["images_per_cpu_second"] for r in rs) for m, rs in runs.items()}
    report: dict[str, Any] = {
        "cpu": _cpu_model(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "images": len(images),
        "source": str(args.folder or CACHE) + ("" if args.folder else " (photos, no video frames)"),
        "model": "cnn67-ibug68, onnxruntime (1 intra-op thread), dlib_hog",
        "batch_options": {"workers": workers, "batch_size": BatchOptions().batch_size, "output": "parquet"},
        "runs": runs,
        "median_images_per_second": {m: round(v, 3) for m, v in median.items()},
        "ratio_batch_to_bare": round(median["batch"] / median["bare"], 3),
        "median_images_per_cpu_second": {m: round(v, 3) for m, v in median_cpu.items()},
        "ratio_batch_to_bare_per_cpu_second": round(median_cpu["batch"] / median_cpu["bare"], 3),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {k: report[k] for k in ("images", "median_images_per_second", "ratio_batch_to_bare")}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
