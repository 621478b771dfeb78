"""``wingmark benchmark``: the serving path against the bare models, the machine's peak and peers.

Everything is measured in one run on this machine and every headline figure is a ratio of two
measurements of that run (the machine may be shared: absolute numbers drift, ratios much less).
Each figure is repeated (``--repeats``) and reported as min / median over the repeats.

1. machine: cores, clock, vector flags -> fp32 peak (tools.perf, assumption stated), numpy SGEMM;
2. bare models through ONNX Runtime: each stage and the cascade at batch 1/8/32/64, threads 1 and 2;
   FLOPs counted from the ONNX graphs -> GFLOP/s and % of peak;
3. in process, on each image (the 512x512 face and an HD frame, tools.benchmark.images): decode, crop
   and cascade in one loop through the runtime's facade with the service's precision and cores (the
   work the service must do), each stage's crop cost per face, the bare cascade of the model the
   service runs, and the peers end to end: dlib HOG + its 68-point predictor, MediaPipe Face Mesh
   (in its own process, where installed);
4. the service (a real uvicorn process on 127.0.0.1): concurrency 1/8/32, client boxes and detection,
   faces/s and latency p50/p95/p99; int8 (the default on CPUs with int8 dot products) against float;
   batching off (max batch 1); the pre-issue-11 settings (before); the HD frame with client boxes;
5. peers on the same cores, image and box: dlib's 68-point shape predictor, and a naive FastAPI
   endpoint (tools.naive) running the same ONNX models per request;
6. where the time goes: the service's own stage histograms and a py-spy profile (if installed).

Writes ``<out>/benchmarks.md``, ``<out>/benchmarks.json`` and PNG plots under ``<out>/img/``.

    wingmark benchmark            # the full run (about 8 minutes on 2 cores)
    wingmark benchmark --quick    # a smoke test (about 2 minutes)
"""

# ruff: noqa: E501  (log lines read better unwrapped)
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.store import DEFAULT_MODELS, ModelStore, default_root
from tools.benchmark.images import bench_image, hd_frame
from tools.benchmark.inprocess import E2E_BATCH, image_rows, service_landmarker
from tools.benchmark.measure import BATCHES, bare_models, bare_probe, dlib_peer, loadavg, log, machine
from tools.benchmark.plots import write_plots
from tools.benchmark.report import write_markdown
from tools.benchmark.serving import CONCURRENCY, service_runs
from tools.benchmark.summary import headline

__all__ = ["main"]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="wingmark benchmark", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--quick", action="store_true", help="a smoke test: fewer batches, requests and repeats")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("docs"),
        help="folder for benchmarks.md/.json and img/ (default docs)",
    )
    p.add_argument("--image", type=Path, help="JPEG with one face (default: a synthetic face, reproducible)")
    p.add_argument("--box", help="client box x1,y1,x2,y2 for --image (default: dlib's detection)")
    p.add_argument("--hd-image", type=Path, help="an HD frame with one face (default: made reproducibly)")
    p.add_argument("--hd-box", help="client box x1,y1,x2,y2 for --hd-image (default: dlib's detection)")
    p.add_argument("--no-hd", action="store_true", help="the main image only")
    p.add_argument(
        "--model", default=DEFAULT_MODELS["ibug68"], help="model name (default: the 68-point default)"
    )
    p.add_argument("--repeats", type=int, help="repeats of each measurement (default 3, --quick 2)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument(
        "--from-json", type=Path, help="only re-render the report and plots from a benchmarks.json"
    )
    args = p.parse_args(argv)
    if args.from_json:
        stored: dict[str, Any] = json.loads(args.from_json.read_text())
        stored["headline"] = headline(stored)
        args.out.mkdir(parents=True, exist_ok=True)
        write_plots(stored, args.out / "img")
        write_markdown(stored, args.out / "benchmarks.md", "img")
        return 0
    started = time.monotonic()
    quick = args.quick
    repeats = args.repeats or (2 if quick else 3)
    min_s = 0.15 if quick else 0.4
    batches = (1, 32) if quick else BATCHES
    concurrencies = (1, 8) if quick else CONCURRENCY
    requests = {1: 20, 8: 60, 32: 96} if quick else {1: 60, 8: 160, 32: 320}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "repeats": repeats,
        "loadavg": {"start": loadavg()},
        "model": args.model,
    }
    log(f"wingmark benchmark{' --quick' if quick else ''}: load average {report['loadavg']['start']}")
    report["gpu"] = (
        "none on this machine (no GPU lent to this run): ONNX Runtime CPU only; scripts/gpu_check.sh "
        "(TensorRT FP16 engine, parity, batch 1-256) is the GPU check and was not run"
    )
    report["machine"] = machine(cores)
    log(
        f"peak {report['machine']['peak']['gflops']:.1f} GFLOP/s assumed; numpy SGEMM {report['machine']['numpy_sgemm_gflops']} GFLOP/s"
    )
    model = ModelStore(default_root()).resolve(args.model)
    made = {"512": bench_image(args.image, _box(args.box))}
    if not args.no_hd:
        made["hd"] = hd_frame(args.hd_image, _box(args.hd_box))
    report["images"] = {
        label: {
            "source": src,
            "bytes": len(data),
            "width": int(px.shape[1]),
            "height": int(px.shape[0]),
            "box": box,
        }
        for label, (data, px, box, src) in made.items()
    }
    report["image"] = report["images"]["512"]
    report["bare"] = bare_models(model, report["machine"]["peak"]["gflops"], repeats, min_s, batches)
    lm, served = service_landmarker(args.model)
    report["inprocess"] = {"landmarker": served, "e2e_batch": E2E_BATCH}
    for label, (data, _, box, _) in made.items():
        report["inprocess"][label] = image_rows(label, lm, data, box, repeats, min_s, int(served["threads"]))
    with tempfile.TemporaryDirectory(prefix="wingmark-bench-") as tmp:
        log_dir = Path(tmp)
        # the bare cascade beside the service's top-concurrency runs: the model the service runs, as it runs it
        probe = bare_probe(lm.model, int(served["threads"]), bool(served["spinning"]), E2E_BATCH, min_s)
        lm.close()
        report["service"] = service_runs(
            {label: (data, box) for label, (data, _, box, _) in made.items()},
            model=args.model,
            repeats=repeats,
            requests=requests,
            concurrencies=concurrencies,
            log_dir=log_dir,
            profile_s=0 if args.no_profile else (4 if quick else 8),
            bare_probe=probe,
        )
        data, pixels, box, _ = made["512"]
        report["peers"] = {"dlib": dlib_peer(pixels, box, repeats, min_s)}
        if report["peers"]["dlib"].get("available"):
            log(
                f"dlib shape predictor: {report['peers']['dlib']['faces_per_s']['median']:.1f} faces/s on 1 core"
            )
        report["peers"]["naive"] = {"available": True, "runs": report["service"].pop("naive_runs")}
    report["headline"] = headline(report)
    report["loadavg"]["end"] = loadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_plots(report, args.out / "img")
    write_markdown(report, args.out / "benchmarks.md", "img")
    log(
        f"done in {report['duration_s'] / 60:.1f} min: {args.out / 'benchmarks.md'}; targets {report['headline']['targets']}"
    )
    return 0


def _box(text: str | None) -> list[float] | None:
    return [float(v) for v in text.split(",")] if text else None
