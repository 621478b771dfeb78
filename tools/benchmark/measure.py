"""Measurements of ``wingmark benchmark`` that need no server: the machine's peak, the bare models through
ONNX Runtime, and dlib's shape predictor as a peer (the images: tools.benchmark.images)."""

# ruff: noqa: E501  (report text and log lines read better unwrapped)
from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.store import ModelVersion
from runtime.decode import jpeg_decoder
from tools.perf import count_flops, cpu_peak, parse_cpuinfo

__all__ = [
    "BATCHES",
    "DLIB_PREDICTOR",
    "THREADS",
    "bare_models",
    "bare_probe",
    "dlib_peer",
    "dlib_predictor_path",
    "loadavg",
    "log",
    "machine",
    "per_call",
    "spread",
]

DLIB_PREDICTOR = Path("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")  # Debian libdlib-data


def dlib_predictor_path() -> Path | None:
    """dlib's 68-point model file: ``WINGMARK_DLIB_PREDICTOR``, else PyPI's ``face-recognition-models``
    (the dev extra installs it, so a fresh clone has it), else Debian's ``libdlib-data``; None if none."""
    import importlib.util
    import os

    candidates = [os.environ.get("WINGMARK_DLIB_PREDICTOR", "")]
    # found, not imported: the package's __init__ needs pkg_resources (setuptools), which may be absent
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"))
    candidates.append(str(DLIB_PREDICTOR))
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


BATCHES = (1, 8, 32, 64)
THREADS = (1, 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of the repeats."""
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def per_call(fn: Callable[[], Any], min_s: float, min_iters: int = 3) -> float:
    """Seconds per call of ``fn`` over at least ``min_iters`` calls and ``min_s`` seconds (after one warm call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


# --------------------------------------------------------------------------------------- 1. machine
def machine(cores: int) -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info = parse_cpuinfo(text)
    peak = cpu_peak(text, cores)
    a = np.random.default_rng(0).random((1536, 1536), dtype=np.float32)
    sgemm_s = min(per_call(lambda: a @ a, 0.3) for _ in range(3))
    sgemm = 2 * 1536**3 / sgemm_s / 1e9
    return {
        "model_name": info["model_name"],
        "cores": cores,
        "mhz": info["mhz"],
        "vector_flags": sorted(f for f in info["flags"] if f.startswith(("avx", "fma", "sse4"))),
        "peak": peak.to_dict(),
        "numpy_sgemm_gflops": round(sgemm, 1),
        "numpy_sgemm_pct_of_peak": round(100 * sgemm / peak.gflops, 1) if peak.gflops else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jpeg_decoder": jpeg_decoder(),
    }


# ----------------------------------------------------------------------------------- 2. bare models
def _session(path: Path, threads: int, spinning: bool = True) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _runtime_casts(path: Path) -> dict[str, int]:
    """Cast nodes in the stored graph and in ORT's optimised graph (fp16 weights cast at load or per run?)."""
    import onnx
    import onnxruntime as ort

    stored = sum(n.op_type == "Cast" for n in onnx.load(str(path)).graph.node)
    with tempfile.TemporaryDirectory() as tmp:
        o = ort.SessionOptions()
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        o.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        optimised = sum(n.op_type == "Cast" for n in onnx.load(o.optimized_model_filepath).graph.node)
    return {"stored": stored, "after_ort_optimisation": optimised}


def _stage_calls(sessions: list[Any], names: list[str], xs: list[np.ndarray]) -> dict[str, Callable[[], Any]]:
    """``stageN`` and ``cascade`` callables over prepared inputs."""

    def one(i: int) -> Callable[[], Any]:
        return lambda: sessions[i].run(None, {names[i]: xs[i]})

    calls = {f"stage{i + 1}": one(i) for i in range(len(sessions))}
    calls["cascade"] = lambda: [sessions[i].run(None, {names[i]: xs[i]}) for i in range(len(sessions))]
    return calls


def bare_models(
    model: ModelVersion, peak_gflops: float, repeats: int, min_s: float, batches: Sequence[int]
) -> dict[str, Any]:
    stages = model.manifest.stages
    flops = [count_flops(model.path / s.file)["total"] for s in stages]
    cascade_flops = sum(flops)
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    configs = [(t, True) for t in THREADS] + [(2, False)]  # (threads, spinning); no-spin as the service runs
    for threads, spinning in configs:
        sessions = [_session(model.path / s.file, threads, spinning) for s in stages]
        names = [s.get_inputs()[0].name for s in sessions]
        for batch in batches:
            xs = [
                rng.standard_normal((batch, 3, s.input_size, s.input_size)).astype(np.float32) for s in stages
            ]
            calls = _stage_calls(sessions, names, xs)
            for what, fn in calls.items():
                if not spinning and what != "cascade":
                    continue
                per_face = cascade_flops if what == "cascade" else flops[int(what[5:]) - 1]
                fps = [batch / per_call(fn, min_s) for _ in range(repeats)]
                st = spread(fps)
                gflops = {k: round(v * per_face / 1e9, 1) for k, v in st.items()}
                rows.append(
                    {
                        "what": what,
                        "threads": threads,
                        "spinning": spinning,
                        "batch": batch,
                        "faces_per_s": st,
                        "gflops": gflops,
                        "pct_of_peak": {k: round(100 * v / peak_gflops, 1) for k, v in gflops.items()},
                    }
                )
                log(
                    f"bare {what:8} threads {threads}{'' if spinning else ' no-spin'} batch {batch:3}: "
                    f"{st['median']:8.1f} faces/s (median of {repeats}), {gflops['median']:6.1f} GFLOP/s"
                )
    best = max((r for r in rows if r["what"] == "cascade"), key=lambda r: r["faces_per_s"]["median"])
    return {
        "gflop_per_face": {f"stage{i + 1}": round(f / 1e9, 4) for i, f in enumerate(flops)}
        | {"cascade": round(cascade_flops / 1e9, 4)},
        "casts": {s.file: _runtime_casts(model.path / s.file) for s in stages},
        "rows": rows,
        "best_cascade": best,
    }


def bare_probe(
    model: ModelVersion, threads: int, spinning: bool, batch: int, min_s: float
) -> Callable[[], float]:
    """A callable measuring the bare cascade's faces/s at one configuration (median of 3 short runs)."""
    stages = model.manifest.stages
    sessions = [_session(model.path / s.file, threads, spinning) for s in stages]
    names = [s.get_inputs()[0].name for s in sessions]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((batch, 3, s.input_size, s.input_size)).astype(np.float32) for s in stages]
    run = _stage_calls(sessions, names, xs)["cascade"]
    return lambda: statistics.median(batch / per_call(run, min_s / 2) for _ in range(3))


# ------------------------------------------------------------------------------------------ 4. peers
def dlib_peer(pixels: np.ndarray, box: list[float], repeats: int, min_s: float) -> dict[str, Any]:
    path = dlib_predictor_path()
    if path is None:
        return {
            "available": False,
            "note": "no dlib 68-point model: pip install face-recognition-models (the dev extra), "
            f"Debian's libdlib-data ({DLIB_PREDICTOR}) or WINGMARK_DLIB_PREDICTOR",
        }
    try:
        import dlib
    except ImportError:
        return {"available": False, "note": "dlib is not importable (PyPI dlib-bin)"}
    from runtime.detectors import dlib_rect_from_box

    predictor = dlib.shape_predictor(str(path))
    rect = dlib_rect_from_box(box)
    image = np.ascontiguousarray(pixels)
    fps = [1.0 / per_call(lambda: predictor(image, rect), min_s) for _ in range(repeats)]
    return {
        "available": True,
        "threads": 1,
        "faces_per_s": spread(fps),
        "file": str(path),
        "note": "dlib's shape predictor runs on one core; its labels are a teacher's, not ground truth",
    }
