"""``wingmark batch``: landmarks of many images and videos into Parquet or JSON Lines (docs/batch.md).

wingmark batch photos/ clips/*.mp4 --out results.parquet       # folders, globs, files, @list.txt
wingmark batch photos/ --out results.jsonl --draw drawn/ --pose
wingmark batch clips/ --out tracks.parquet --no-smooth           # raw landmarks only
wingmark batch s3://bucket/photos/ --out s3://bucket/out/ --ray auto --actors 8 --gpus-per-actor 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from runtime.cascade import VIEWS
    from runtime.landmarker import REFINE

    p = argparse.ArgumentParser(
        prog="wingmark batch",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
    )
    p.add_argument("inputs", nargs="+", help="image or video files, folders (recursive), globs, @list files")
    p.add_argument(
        "--out", required=True, help="output: .parquet or .jsonl (with --ray: a Parquet folder/URI)"
    )
    p.add_argument("--model", help="model name (default: the scheme's default model)")
    p.add_argument("--scheme", default="ibug68", choices=["ibug68", "aflw19"])
    p.add_argument("--version", default="latest", help="model version")
    p.add_argument("--store", help="model store folder (default: the packaged models / WINGMARK_MODEL_ROOT)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime (default) or tensorrt")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per landmarker")
    p.add_argument("--detector", default="dlib_hog", help="a registered face detector")
    p.add_argument(
        "--refine",
        choices=REFINE,
        default="detector",
        help="which faces run the cascade again from their first points' tight box (default: detected ones)",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=VIEWS,
        default=1,
        help="crops per face at the last stage, moved by 4 %% of the face size and averaged (default 1)",
    )
    p.add_argument("--max-faces", type=int, help="at most this many faces per image or frame")
    p.add_argument("--pose", action="store_true", help="add head pose (yaw, pitch, roll) per face")
    p.add_argument("--batch-size", type=int, default=32, help="faces per network call (default 32)")
    p.add_argument("--workers", type=int, default=0, help="decode + detect threads (default: every core)")
    p.add_argument("--draw", type=Path, help="write annotated images and videos under this folder")
    p.add_argument("--restart", action="store_true", help="overwrite --out instead of resuming it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-every", type=float, default=10.0,
                   help="seconds between progress lines off a terminal (default 10)")  # fmt: skip
    v = p.add_argument_group("videos")
    v.add_argument("--no-track", action="store_true", help="detect on every frame instead of tracking")
    v.add_argument("--verify-every", type=int, default=10, help="frames between detector checks of a track")
    v.add_argument(
        "--redetect-every", type=int, default=0, help="frames between whole-frame detections (0: when lost)"
    )
    v.add_argument("--no-smooth", action="store_true", help="no One Euro smoothing (landmarks_raw only)")
    v.add_argument("--min-cutoff", type=float, default=0.3, help="One Euro cutoff at rest, Hz (default 0.3)")
    v.add_argument("--beta", type=float, default=10.0, help="One Euro speed coefficient (default 10.0)")
    v.add_argument(
        "--d-cutoff", type=float, default=1.0, help="One Euro speed-estimate cutoff, Hz (default 1.0)"
    )
    r = p.add_argument_group("Ray")
    r.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run on Ray Data: 'auto' (RAY_ADDRESS or a new local instance), 'local', "
                   "or ray://host:10001")  # fmt: skip
    r.add_argument("--actors", type=int, default=0, help="landmarker actors (default: one per CPU or GPU)")
    r.add_argument("--gpus-per-actor", type=float, default=None, help="GPUs per actor (default: 1 if GPUs)")
    r.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor (default 1)")
    r.add_argument("--rows-per-call", type=int, default=16, help="inputs per map_batches call (default 16)")
    return p  # fmt: skip


def _missing_extras(*, ray: bool) -> list[str]:
    import importlib.util

    names = ["pyarrow", "av"] + (["ray"] if ray else [])
    return [n for n in names if importlib.util.find_spec(n) is None]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not args.ray and Path(args.out).suffix.lower() not in {".parquet", ".jsonl"}:
        print(f"wingmark batch: --out must end in .parquet or .jsonl, got {args.out!r}", file=sys.stderr)
        return 2
    missing = _missing_extras(ray=bool(args.ray))
    if missing:
        print(f"wingmark batch: needs {', '.join(missing)}: pip install 'wingmark[batch]'"
              + (" 'wingmark[ray]'" if args.ray else ""), file=sys.stderr)  # fmt: skip
        return 2
    from runtime.backends import BackendUnavailableError
    from runtime.batch.inputs import InputError, expand_inputs
    from runtime.batch.job import BatchJob, BatchOptions
    from runtime.batch.tracking import OneEuroParams, TrackerConfig
    from runtime.landmarker import Landmarker

    smoothing = None if args.no_smooth else OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff)
    tracker = TrackerConfig(
        verify_every=args.verify_every, redetect_every=args.redetect_every, smoothing=smoothing
    )
    options = BatchOptions(
        max_faces=args.max_faces, pose=args.pose, batch_size=args.batch_size, workers=args.workers,
        track=not args.no_track, tracker=tracker, draw=args.draw,
    )  # fmt: skip
    spec = {
        "model": args.model, "scheme": args.scheme, "version": args.version, "store": args.store,
        "backend": args.backend, "device": args.device, "detector": args.detector, "threads": args.threads,
        "refine": args.refine, "views": args.views,
    }  # fmt: skip
    try:
        if args.ray:
            from runtime.batch.ray_job import RayOptions, run_ray

            ray_options = RayOptions(
                address=args.ray, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                cpus_per_actor=args.cpus_per_actor, rows_per_call=args.rows_per_call,
            )  # fmt: skip
            report = run_ray(args.inputs, args.out, landmarker=spec, options=options, ray_options=ray_options,
                             resume=not args.restart)  # fmt: skip
            print(json.dumps(report, indent=2))
            return 0
        inputs = expand_inputs(args.inputs)
        workers = args.workers or os.cpu_count() or 1
        landmarker = Landmarker.from_store(
            args.model, scheme=args.scheme, version=args.version, store=args.store, backend=args.backend,
            device=args.device, max_batch_size=max(args.batch_size, 1), detector=args.detector,
            detector_options={"instances": workers} if args.detector == "dlib_hog" else None,
            threads=args.threads, refine=args.refine, views=args.views,
        )  # fmt: skip
    except (InputError, ValueError, BackendUnavailableError, FileNotFoundError, KeyError, ImportError) as exc:
        print(f"wingmark batch: {exc}", file=sys.stderr)
        return 2
    try:
        summary = BatchJob(landmarker, options).run(
            inputs, Path(args.out), resume=not args.restart, progress=not args.no_progress,
            log_every=args.log_every,
        )  # fmt: skip
    except ValueError as exc:  # e.g. an --out suffix that is neither .parquet nor .jsonl
        print(f"wingmark batch: {exc}", file=sys.stderr)
        return 2
    finally:
        landmarker.close()
    print(json.dumps({"out": args.out, **summary.to_dict()}, indent=2))
    return 130 if summary.interrupted else 0
