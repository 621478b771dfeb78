"""``wingmark export``, ``build-engine``, ``quantize``, ``gate``, ``flip`` and ``splice``.

Heavy imports (torch, TensorRT, onnxruntime.quantization) happen inside the commands: ``build-engine``
never imports torch, so it runs in a GPU image without the training extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_engine_main", "export_main", "flip_main", "gate_main", "quantize_main", "splice_main"]

# max abs error (crop units) allowed between a TensorRT engine and ONNX Runtime, per precision
ENGINE_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "int8": 5e-2}


def _store(root: str | None) -> Any:
    from model_store.store import ModelStore

    return ModelStore(Path(root) if root else None)


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark export",
        description="Export a trained run's stages to ONNX, check parity, evaluate, calibrate the "
        "dlib box and publish a model version into the model store.",
    )
    parser.add_argument(
        "run_dir", type=Path, help="training run directory (holds stage1/best.pt, stage2/best.pt)"
    )
    parser.add_argument("--name", required=True, help="model name, e.g. cnn67-ibug68")
    parser.add_argument("--version", required=True, help="version string, e.g. 1.0.0")
    parser.add_argument(
        "--store", help="model store root (default $WINGMARK_MODEL_ROOT or model_store/models)"
    )
    parser.add_argument("--which", default="best", choices=["best", "last"], help="which checkpoints")
    parser.add_argument(
        "--fp16-weights", action="store_true", help="store weights as float16 (half the size)"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="fp32 ONNX vs PyTorch max abs error")
    parser.add_argument("--fp16-tolerance", type=float, default=2e-3, help="same, for --fp16-weights files")
    parser.add_argument(
        "--eval-data", help="JSON dataset spec for the evaluation (default: the run's val set)"
    )
    parser.add_argument(
        "--min-dlib-faces", type=int, default=20, help="fewer -> documented default calibration"
    )
    parser.add_argument("--description", default="")
    parser.add_argument("--work-dir", type=Path, help="where ONNX files and the report are written first")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="also write the export report here")
    args = parser.parse_args(argv)

    import torch

    from train.export.parity import ParityError
    from train.export.publish import export_run

    torch.set_num_threads(max(1, args.threads))
    try:
        published, report = export_run(
            args.run_dir,
            args.name,
            args.version,
            store=_store(args.store),
            work_dir=args.work_dir,
            which=args.which,
            fp16_weights=args.fp16_weights,
            tolerance=args.tolerance,
            fp16_tolerance=args.fp16_tolerance,
            eval_data=json.loads(args.eval_data) if args.eval_data else None,
            min_dlib_faces=args.min_dlib_faces,
            description=args.description,
            overwrite=args.overwrite,
        )
    except ParityError as exc:
        print(f"wingmark export: parity check failed: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"wingmark export: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    ev = report["evaluation"]
    print(
        json.dumps(
            {
                "published": str(published.path),
                "files": report["files"],
                "val_nme": {k: ev[k]["nme"] for k in ev if k.startswith("stage")},
                "test_nme": ev["test"]["final"]["nme"] if "test" in ev else None,
                "parity_max_abs_error": [p["max_abs_error"] for p in ev["parity"]],
                "dlib_faces_found": ev["box_calibration"]["faces_found"],
            },
            indent=2,
        )
    )
    return 0


# --------------------------------------------------------------------------------------------
# build-engine
# --------------------------------------------------------------------------------------------


def _batch_sizes(text: str) -> list[int]:
    sizes = sorted({int(t) for t in text.split(",") if t.strip()})
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("batch sizes must be positive integers, e.g. 1,8,32,64")
    return sizes


def _check_samples(model: Any, n: int, seed: int) -> tuple[list[Any], str]:
    """Synthetic faces like the model's validation set (``seed`` picks a disjoint set), or none."""
    from train.export.evaluate import load_synthetic

    spec = dict(model.manifest.provenance.data.get("val") or {"kind": "synthetic", "image_size": 256})
    spec.update(num=n, seed=seed)
    spec.pop("limit", None)
    spec.setdefault("kind", "synthetic")
    try:
        return load_synthetic(spec, model.manifest.scheme), f"synthetic:n={n}:seed={seed}"
    except (ImportError, ValueError) as exc:
        return [], f"unavailable ({exc})"


def build_engine_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark build-engine",
        description="Build (or find in the cache) a TensorRT engine per stage of a model version, check "
        "it against ONNX Runtime on the same batch, optionally measure throughput.",
    )
    parser.add_argument("model", help="model name in the store, e.g. cnn67-ibug68")
    parser.add_argument("--version", default="latest")
    parser.add_argument("--store", help="model store root")
    parser.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--max-batch", type=int, default=64, help="profile max batch size (min is 1)")
    parser.add_argument("--opt-batch", type=int, help="profile optimum batch size (default max/4)")
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default $WINGMARK_ENGINE_CACHE)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--calibration-samples", type=int, default=512, help="INT8 calibration faces")
    parser.add_argument("--check-samples", type=int, default=64, help="faces for the ONNX Runtime check")
    parser.add_argument("--tolerance", type=float, help="engine vs ONNX Runtime max abs error (crop units)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    parser.add_argument(
        "--bench", type=_batch_sizes, help="measure faces/s at these batch sizes, e.g. 1,8,32,64"
    )
    parser.add_argument("--bench-seconds", type=float, default=1.0)
    parser.add_argument("--force", action="store_true", help="rebuild even when a valid engine is cached")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    from runtime.backends import tensorrt as te
    from train.export.evaluate import StageGeometry, evaluate_cascade, stage_inputs
    from train.export.parity import ParityError, compare_outputs, onnx_runtime_session, run_onnx

    ok, reason = te.cuda_available()
    if not ok:
        print(f"wingmark build-engine: {reason}", file=sys.stderr)
        return 3
    model = _store(args.store).resolve(args.model, args.version)
    _store(args.store).verify(model)
    manifest = model.manifest
    profile = te.BatchProfile.for_max(args.max_batch, args.opt_batch)
    cache = te.EngineCache(args.cache_dir or te.default_cache_dir())
    capability, trt_version = te.device_compute_capability(args.device), te.tensorrt_version()
    geometries = [StageGeometry.from_spec(s) for s in manifest.stages]

    samples: list[Any] = []
    check_note = "skipped"
    if not args.no_check or args.precision == "int8":
        samples, check_note = _check_samples(model, max(args.check_samples, 1), seed=7)
    calib_id = None
    calib_samples: list[Any] = []
    if args.precision == "int8":
        calib_samples, calib_id = _check_samples(model, args.calibration_samples, seed=20180618)
        if not calib_samples:
            print(f"wingmark build-engine: INT8 needs calibration data: {calib_id}", file=sys.stderr)
            return 2

    report: dict[str, Any] = {
        "model": f"{manifest.name}/{manifest.version}",
        "precision": args.precision,
        "profile": {"min": profile.min, "opt": profile.opt, "max": profile.max},
        "compute_capability": capability,
        "tensorrt": trt_version,
        "stages": [],
    }
    runners = []
    from model_store.geometry import tight_box
    from model_store.schemes import get_scheme

    scheme = get_scheme(manifest.scheme)
    tolerance = args.tolerance if args.tolerance is not None else ENGINE_TOLERANCE[args.precision]
    status = 0
    for i, spec in enumerate(manifest.stages):
        onnx_path = model.path / spec.file
        key = te.engine_key(
            onnx_path,
            spec.input_size,
            compute_capability=capability,
            tensorrt_version=trt_version,
            precision=args.precision,
            profile=profile,
            calibration=calib_id,
        )
        engine_path = te.engine_path_for(cache.root, manifest.name, manifest.version, i, key)
        if args.force:
            engine_path.with_name(engine_path.name + ".json").unlink(missing_ok=True)

        # INT8 calibration cache: tied to this ONNX file and this calibration set
        calib_cache = (
            engine_path.parent / f"stage{i}_{key.onnx_sha256[:16]}_{(calib_id or '').replace(':', '_')}.calib"
        )

        def build(onnx_path: Path = onnx_path, i: int = i, calib_cache: Path = calib_cache) -> bytes:
            batches = None
            if args.precision == "int8":
                gt = np.stack([s.points for s in calib_samples]).astype(np.float64)
                x, _ = stage_inputs(
                    [s.image for s in calib_samples],
                    i,
                    geometries[i],
                    scheme,
                    boxes=tight_box(gt),
                    previous=gt,
                )
                batches = [x[j : j + profile.opt] for j in range(0, len(x) - profile.opt + 1, profile.opt)]
            return te.build_serialized_engine(
                onnx_path,
                profile,
                args.precision,
                calibration_batches=batches,
                calibration_cache=calib_cache if args.precision == "int8" else None,
            )

        path, built = cache.get_or_build(manifest.name, manifest.version, i, key, build)
        runner = te.EngineRunner(path, profile.max, device=args.device)
        runners.append(runner)
        entry: dict[str, Any] = {
            "stage": i + 1,
            "engine": str(path),
            "built": built,
            "bytes": path.stat().st_size,
        }
        if samples and not args.no_check:
            gt = np.stack([s.points for s in samples]).astype(np.float64)
            x, _ = stage_inputs(
                [s.image for s in samples], i, geometries[i], scheme, boxes=tight_box(gt), previous=gt
            )
            x = x[: profile.max]
            reference = run_onnx(onnx_runtime_session(onnx_path), x)
            try:
                parity = compare_outputs(
                    reference, runner.run(x), tolerance, ("onnxruntime", f"tensorrt {args.precision}")
                )
                entry["parity"] = parity.to_dict()
            except ParityError as exc:
                entry["parity"] = {"passed": False, "error": str(exc)}
                status = 1
        report["stages"].append(entry)
    report["check_data"] = check_note

    if samples and not args.no_check:
        ort_sessions = [onnx_runtime_session(model.path / s.file) for s in manifest.stages]
        ort_eval = evaluate_cascade(lambda k, b: run_onnx(ort_sessions[k], b), geometries, samples, scheme)
        trt_eval = evaluate_cascade(
            lambda k, b: runners[k].run(b), geometries, samples, scheme, batch_size=profile.max
        )
        report["cascade_nme"] = {
            "onnxruntime": ort_eval["final"]["nme"],
            "tensorrt": trt_eval["final"]["nme"],
        }

    if args.bench:
        sizes = [n for n in args.bench if n <= profile.max]
        per_stage = [
            te.benchmark_runner(r.run, (3, g.input_size, g.input_size), sizes, seconds=args.bench_seconds)
            for r, g in zip(runners, geometries, strict=True)
        ]
        rows = []
        for j, n in enumerate(sizes):
            latency = sum(stage[j]["latency_ms"] for stage in per_stage)
            rows.append(
                {
                    "batch_size": n,
                    "stage_latency_ms": [round(stage[j]["latency_ms"], 3) for stage in per_stage],
                    "cascade_latency_ms": round(latency, 3),
                    "faces_per_s": round(n / (latency / 1e3), 1),
                }
            )
        report["throughput"] = rows
        print(f"\n{manifest.name}/{manifest.version} TensorRT {trt_version} {args.precision} sm{capability}")
        print(f"{'batch':>6} {'stage ms':>20} {'cascade ms':>11} {'faces/s':>10}")
        for row in rows:
            stage_ms = "/".join(f"{v:.2f}" for v in row["stage_latency_ms"])
            n, total, fps = row["batch_size"], row["cascade_latency_ms"], row["faces_per_s"]
            print(f"{n:>6} {stage_ms:>20} {total:>11.2f} {fps:>10.1f}")
    for r in runners:
        r.close()
    _write_json(args.json, report)
    print(json.dumps(report, indent=2, default=str))
    return status


# --------------------------------------------------------------------------------------------
# quantize
# --------------------------------------------------------------------------------------------


def quantize_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark quantize",
        description="ONNX Runtime INT8 quantisation of a model version for CPU serving; reports the NME "
        "change (synthetic validation and test sets, real held-out faces) and the CPU speed-up, and "
        "publishes NAME-int8 (same version) unless its NME is worse than --max-relative-loss.",
    )
    parser.add_argument("model", help="NAME or NAME@VERSION in the store, e.g. cnn67-ibug68@2.0.0")
    parser.add_argument("--version", default=None, help="the version (default: NAME@VERSION's, else latest)")
    parser.add_argument("--store", help="model store root to read from")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="publish NAME-int8 beside the float model in the store it was read from (the service "
        "picks it on CPUs with VNNI/AMX); without it, into --out-store",
    )
    parser.add_argument("--out-store", default="runs/quantized", help="store root to publish NAME-int8 into")
    parser.add_argument("--mode", default="static", choices=["static", "dynamic"])
    parser.add_argument("--suffix", default="-int8")
    activations_help = "static: auto = uint8 (U8S8) for depthwise graphs (S8S8 is slower there), else int8"
    parser.add_argument(
        "--activations", default="auto", choices=["auto", "int8", "uint8"], help=activations_help
    )
    parser.add_argument("--keep-float", action="append", default=[], help="node-name substring left float")
    parser.add_argument("--calibration-samples", type=int, default=256, help="synthetic calibration faces")
    parser.add_argument(
        "--real-root",
        default="cache/real",
        help="the real-face cache (wingmark data real): calibration faces from its train split, "
        "evaluation on its test split ('' to skip)",
    )
    parser.add_argument("--real-calibration-samples", type=int, default=128)
    parser.add_argument(
        "--max-relative-loss",
        type=float,
        default=0.03,
        help="refuse to publish when int8's NME is worse than float's by more than this fraction on a set",
    )
    parser.add_argument("--eval-samples", type=int, help="limit the synthetic evaluation sets")
    parser.add_argument("--batch-sizes", type=_batch_sizes, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    from train.export.quantize import quantize_version

    name, _, at_version = args.model.partition("@")
    store = _store(args.store)
    model = store.resolve(name, args.version or at_version or "latest")
    store.verify(model)
    real_root = Path(args.real_root) if args.real_root else None
    if real_root is not None and not (real_root / "manifest.json").is_file():
        print(f"no real-face cache at {real_root} (wingmark data real); pass --real-root '' to skip it")
        return 2
    try:
        published, report = quantize_version(
            model,
            store if args.publish else _store(args.out_store),
            mode=args.mode,
            suffix=args.suffix,
            calibration_samples=args.calibration_samples,
            eval_samples=args.eval_samples,
            real_root=real_root,
            real_calibration_samples=args.real_calibration_samples,
            max_relative_loss=args.max_relative_loss,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            overwrite=args.overwrite,
            activations=args.activations,
            keep_float=args.keep_float,
        )
    except ValueError as exc:  # e.g. a pose-gated version
        print(f"wingmark quantize: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    keys = ("source", "mode", "sets", "worst_relative_change", "sizes_bytes", "speed", "cpu", "published")
    summary = {k: report[k] for k in keys}
    if "refused" in report:
        summary["refused"] = report["refused"]
    print(json.dumps(summary, indent=2, default=str))
    return 0 if published is not None else 1


# --------------------------------------------------------------------------------------------
# gate
# --------------------------------------------------------------------------------------------


def gate_threshold(given: float | None, heads_threshold: float | None) -> float:
    """The gate's |yaw| threshold: the one given on the command line, else that of the version whose yaw heads
    are reused (``--heads-from``), else 45 degrees."""
    if given is not None:
        return given
    return heads_threshold if heads_threshold is not None else 45.0


def gate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark gate",
        description="Publish a pose-gated model version: each stage runs the frontal model and, for the "
        "faces its yaw head puts at or above --threshold degrees, the turned model (train.export.gate). "
        "Reports the gated cascade beside both models alone on the frontal model's evaluation sets. A "
        "turned model of another crop geometry reads its crop as a window of the frontal one "
        "(train.export.cross_crop).",
    )
    parser.add_argument("--frontal", required=True, help="[STORE_DIR:]NAME@VERSION for near-frontal faces")
    parser.add_argument("--turned", required=True, help="[STORE_DIR:]NAME@VERSION for turned faces")
    parser.add_argument("--name", required=True, help="the gated version's model name")
    parser.add_argument("--version", required=True)
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="|yaw| in degrees (default: the --heads-from version's threshold, else 45)",
    )
    parser.add_argument("--store", help="store root to publish into (default: the repository's)")
    parser.add_argument(
        "--heads-from",
        help="[STORE_DIR:]NAME@VERSION of a gated version whose yaw heads (and, without --threshold, "
        "threshold) to reuse, e.g. the float version's for its int8 variant; default: fit them on the "
        "frontal model",
    )
    parser.add_argument("--ridge", type=float, default=1e-2, help="the heads' L2 penalty")
    parser.add_argument(
        "--float",
        dest="float_version",
        help="[STORE_DIR:]NAME@VERSION: the gated float version this is the int8 variant of (--frontal is "
        "then an int8 variant); records the int8-vs-float NME per set and the speed-up, refused past 3 %%",
    )
    parser.add_argument("--description", default="")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    from train.export.gate import (
        DEFAULT_FIT_SETS,
        YawHead,
        fit_heads,
        gate_version,
        is_gated,
        resolve_spec,
    )

    frontal, turned = resolve_spec(args.frontal), resolve_spec(args.turned)
    heads_threshold: float | None = None
    if args.heads_from:
        source = resolve_spec(args.heads_from)
        if not is_gated(source.manifest):
            print(f"wingmark gate: {args.heads_from} is not a gated version", file=sys.stderr)
            return 2
        config = source.manifest.provenance.config
        heads = [YawHead.from_dict(h) for h in config["heads"]]
        heads_report = {**config["heads_fit"], "from": f"{source.name}@{source.version}"}
        heads_threshold = float(config["threshold_deg"])
    else:
        print(f"fitting yaw heads on {frontal.name}@{frontal.version}")
        heads, heads_report = fit_heads(frontal, DEFAULT_FIT_SETS, ridge=args.ridge)
    try:
        _, report = gate_version(
            frontal,
            turned,
            args.name,
            args.version,
            _store(args.store),
            threshold=gate_threshold(args.threshold, heads_threshold),
            heads=heads,
            heads_report=heads_report,
            float_version=resolve_spec(args.float_version) if args.float_version else None,
            description=args.description,
            overwrite=args.overwrite,
        )
    except ValueError as exc:  # models that cannot be gated, or an int8 variant past the NME limit
        print(f"wingmark gate: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    return 0


# --------------------------------------------------------------------------------------------
# flip
# --------------------------------------------------------------------------------------------


def flip_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark flip",
        description="Publish a flip-averaged model version: the chosen stages run each crop and its mirror "
        "image through the source's network and average the two (train.export.flip). Reports it beside the "
        "source on the source's evaluation sets, checks each averaged graph against numpy, and times both.",
    )
    parser.add_argument("source", help="[STORE_DIR:]NAME@VERSION to average")
    parser.add_argument("--name", required=True, help="the new version's model name")
    parser.add_argument("--version", required=True)
    parser.add_argument(
        "--stages", default="", help="comma-separated stage numbers to average (default: the last)"
    )
    parser.add_argument("--store", help="store root to publish into (default: the repository's)")
    parser.add_argument(
        "--float",
        dest="float_version",
        help="[STORE_DIR:]NAME@VERSION: the flip-averaged float version this is the int8 variant of (the "
        "source is then an int8 variant); records the int8-vs-float NME per set and the speed-up, refused "
        "past 3 %%",
    )
    parser.add_argument("--description", default="")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    from train.export.flip import flip_version
    from train.export.gate import resolve_spec

    try:
        stages = [int(s) for s in args.stages.split(",") if s.strip()]
        _, report = flip_version(
            resolve_spec(args.source),
            args.name,
            args.version,
            _store(args.store),
            stages=stages or None,
            float_version=resolve_spec(args.float_version) if args.float_version else None,
            description=args.description,
            overwrite=args.overwrite,
        )
    except ValueError as exc:  # bad stage numbers, an already averaged source, an int8 NME past the limit
        print(f"wingmark flip: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    return 0


# --------------------------------------------------------------------------------------------
# splice
# --------------------------------------------------------------------------------------------


def splice_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark splice",
        description="Publish a cascade whose stage i is stage i of the i-th source version "
        "(train.export.splice): stages of different networks and crop geometries chain as they are. "
        "Reports it beside the last source on that source's evaluation sets and times both.",
    )
    parser.add_argument("sources", nargs="+", help="[STORE_DIR:]NAME@VERSION, one per stage, in order")
    parser.add_argument("--name", required=True, help="the new version's model name")
    parser.add_argument("--version", required=True)
    parser.add_argument("--store", help="store root to publish into (default: the repository's)")
    parser.add_argument("--description", default="")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)

    from train.export.gate import resolve_spec
    from train.export.splice import splice_version

    try:
        _, report = splice_version(
            [resolve_spec(s) for s in args.sources],
            args.name,
            args.version,
            _store(args.store),
            description=args.description,
            overwrite=args.overwrite,
        )
    except ValueError as exc:  # one source, mixed schemes, a source without that stage
        print(f"wingmark splice: {exc}", file=sys.stderr)
        return 2
    _write_json(args.json, report)
    return 0
