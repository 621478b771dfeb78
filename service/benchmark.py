"""``wingmark benchmark``: the serving path against the bare models, the machine's peak and peers.

Everything is measured in one run on this machine and every headline figure is a ratio of two
measurements of that run (the machine may be shared: absolute numbers drift, ratios much less).
Each figure is repeated (``--repeats``) and reported as min / median over the repeats.

1. machine: cores, clock, vector flags -> fp32 peak (service.perf, assumption stated), numpy SGEMM;
2. bare models through ONNX Runtime: each stage and the cascade at batch 1/8/32/64, threads 1 and 2;
   FLOPs counted from the ONNX graphs -> GFLOP/s and % of peak;
3. the service (a real uvicorn process on 127.0.0.1): concurrency 1/8/32, client boxes and detection,
   faces/s and latency p50/p95/p99; batching off (max batch 1); the pre-issue-11 settings (before);
4. peers on the same cores, image and box: dlib's 68-point shape predictor, and a naive FastAPI
   endpoint (service.naive) running the same ONNX models per request;
5. where the time goes: the service's own stage histograms and a py-spy profile (if installed).

Writes ``<out>/benchmarks.md``, ``<out>/benchmarks.json`` and PNG plots under ``<out>/img/``.

    wingmark benchmark            # the full run (about 10 minutes on 2 cores)
    wingmark benchmark --quick    # a smoke test (about 2 minutes)
"""

# ruff: noqa: E501  (report text and table rows read better unwrapped)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_store.store import DEFAULT_MODELS, ModelStore, ModelVersion, default_root
from service.bench import percentile
from service.perf import count_flops, cpu_peak, parse_cpuinfo

__all__ = ["main"]

DLIB_PREDICTOR = Path("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")  # Debian libdlib-data
BATCHES = (1, 8, 32, 64)
THREADS = (1, 2)
CONCURRENCY = (1, 8, 32)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _stats(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of the repeats."""
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unavailable"


def _per_call(fn: Callable[[], Any], min_s: float, min_iters: int = 3) -> float:
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
    sgemm_s = min(_per_call(lambda: a @ a, 0.3) for _ in range(3))
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
                fps = [batch / _per_call(fn, min_s) for _ in range(repeats)]
                st = _stats(fps)
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
                _log(
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


def _bare_probe(
    model: ModelVersion, threads: int, spinning: bool, batch: int, min_s: float
) -> Callable[[], float]:
    """A callable measuring the bare cascade's faces/s at one configuration (median of 3 short runs)."""
    stages = model.manifest.stages
    sessions = [_session(model.path / s.file, threads, spinning) for s in stages]
    names = [s.get_inputs()[0].name for s in sessions]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((batch, 3, s.input_size, s.input_size)).astype(np.float32) for s in stages]
    run = _stage_calls(sessions, names, xs)["cascade"]
    return lambda: statistics.median(batch / _per_call(run, min_s / 2) for _ in range(3))


# --------------------------------------------------------------------------------------- 3. service
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Proc:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path


@contextlib.contextmanager
def _server(
    argv: list[str], env: dict[str, str], ready_path: str, log_dir: Path, name: str
) -> Iterator[_Proc]:
    import httpx

    port = _free_port()
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, **env, "WINGMARK_PORT": str(port), "WINGMARK_HOST": "127.0.0.1"}
    cmd = [a.replace("{port}", str(port)) for a in argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield _Proc(proc, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _load(
    port: int, target: str, body: bytes, content_type: str, requests: int, concurrency: int
) -> dict[str, Any]:
    """A lean HTTP/1.1 keep-alive client (asyncio streams; little CPU next to the server's)."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    todo = iter(range(requests))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    faces = 0

    async def worker() -> None:
        nonlocal faces
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in todo:
                t0 = time.perf_counter()
                writer.write(request)
                await writer.drain()
                header = await reader.readuntil(b"\r\n\r\n")
                status = int(header.split(b" ", 2)[1])
                m = re.search(rb"(?i)content-length:\s*(\d+)", header)
                payload = await reader.readexactly(int(m.group(1)) if m else 0)
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[status] += 1
                if status == 200:
                    faces += payload.count(b'"landmarks"')
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "latencies_ms": latencies, "statuses": dict(statuses), "faces": faces}


def _scrape(port: int) -> dict[str, tuple[float, float]]:
    """wingmark_stage_duration_seconds: stage -> (sum, count)."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for m in re.finditer(
        r'^wingmark_stage_duration_seconds_(sum|count)\{stage="([^"]+)"\} ([\d.e+-]+)$', text, re.M
    ):
        out.setdefault(m.group(2), [0.0, 0.0])[0 if m.group(1) == "sum" else 1] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def _stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], requests: int
) -> dict[str, float]:
    """Mean ms per request of each stage between two scrapes."""
    out = {}
    for stage, (s, _) in after.items():
        s0 = before.get(stage, (0.0, 0.0))[0]
        if s - s0 > 0:
            out[stage] = round((s - s0) * 1000 / requests, 2)
    return out


def _measure_once(
    port: int, target: str, body: bytes, requests: int, concurrency: int, scrape: bool
) -> dict[str, Any]:
    m0 = _scrape(port) if scrape else {}
    r = asyncio.run(_load(port, target, body, "image/jpeg", requests, concurrency))
    if scrape:
        r["stage_ms"] = _stage_means(m0, _scrape(port), requests)
    r["faces_per_s"] = r["faces"] / r["wall_s"]
    return r


def _aggregate(samples: list[dict[str, Any]], requests: int, concurrency: int) -> dict[str, Any]:
    lat = [v for r in samples for v in r["latencies_ms"]]
    statuses: Counter[str] = Counter()
    for r in samples:
        statuses.update({str(k): v for k, v in r["statuses"].items()})
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": requests,
        "repeats": len(samples),
        "faces_per_s": _stats([r["faces_per_s"] for r in samples]),
        "latency_ms": {f"p{q}": round(percentile(lat, q), 1) for q in (50, 95, 99)},
        "statuses": dict(statuses),
    }
    stage_ms = [r["stage_ms"] for r in samples if "stage_ms" in r]
    if stage_ms:
        out["stage_ms_per_request"] = {
            k: round(statistics.median(d.get(k, 0.0) for d in stage_ms), 2) for k in stage_ms[0]
        }
    return out


SERVICE_CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "batching_off": {"WINGMARK_MAX_BATCH_SIZE": "1"},
    "ort_1_thread": {"WINGMARK_ORT_THREADS": "1"},
    "timed": {"WINGMARK_BATCH_POLICY": "timed"},
    "h11_asyncio": {"WINGMARK_UVICORN_HTTP": "h11", "WINGMARK_UVICORN_LOOP": "asyncio"},
    "before": {
        "WINGMARK_BATCH_POLICY": "timed",
        "WINGMARK_UVICORN_HTTP": "h11",
        "WINGMARK_UVICORN_LOOP": "asyncio",
        "WINGMARK_ORT_THREADS": "1",
        "WINGMARK_ORT_SPINNING": "true",
        "WINGMARK_DECODE_THREADS": "2",
        "WINGMARK_CASCADE_PIPELINE": "false",
    },
}


NAIVE_ARGV = [sys.executable, "-m", "uvicorn", "--factory", "service.naive:create_app", "--host", "127.0.0.1",
              "--port", "{port}", "--log-level", "warning"]  # fmt: skip


def service_runs(
    image: bytes,
    box: list[float],
    *,
    model: str,
    repeats: int,
    requests: dict[int, int],
    concurrencies: Sequence[int],
    log_dir: Path,
    profile_s: float,
    bare_probe: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Every service configuration and the naive peer run side by side (all servers up, idle when not
    measured), in rounds: each round measures every (config, mode, concurrency) once, so a change of the
    machine's load hits all of them alike. ``bare_probe`` (faces/s of the bare cascade at its best batch)
    is measured right before and after each default client-box run at the top concurrency."""
    boxes_q = "/v1/landmarks?boxes=" + json.dumps([box]).replace(" ", "")
    naive_q = "/landmarks?box=" + ",".join(f"{v:.2f}" for v in box)
    argv = [sys.executable, "-m", "service.cli", "serve"]
    base_env = {"WINGMARK_MODELS": model, "WINGMARK_LOG_LEVEL": "warning"}
    c_max = max(concurrencies)
    plan: list[tuple[str, str, int]] = [
        ("default", mode, c) for mode in ("client", "detect") for c in concurrencies
    ]
    plan += [("batching_off", "client", c_max), ("batching_off", "detect", c_max)]
    plan += [("ort_1_thread", "client", c_max), ("ort_1_thread", "detect", c_max)]
    plan += [("timed", "client", 1), ("timed", "client", c_max), ("h11_asyncio", "client", c_max)]
    plan += [("before", "client", c_max), ("before", "detect", c_max)]
    plan += [("naive", "client", 1), ("naive", "client", c_max)]
    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {k: [] for k in plan}
    adjacent: list[float] = []
    out: dict[str, Any] = {"runs": [], "naive_runs": []}
    with contextlib.ExitStack() as stack:
        procs = {
            cfg: stack.enter_context(_server(argv, {**base_env, **env}, "/readyz", log_dir, f"service-{cfg}"))
            for cfg, env in SERVICE_CONFIGS.items()
        }
        procs["naive"] = stack.enter_context(
            _server(NAIVE_ARGV, {"WINGMARK_NAIVE_MODEL": model}, "/openapi.json", log_dir, "naive")
        )
        ports = {cfg: p.port for cfg, p in procs.items()}
        for cfg, mode, c in plan:  # warm every server and path once
            target = naive_q if cfg == "naive" else (boxes_q if mode == "client" else "/v1/landmarks")
            asyncio.run(_load(ports[cfg], target, image, "image/jpeg", min(requests[c], 2 * c), c))
        for rnd in range(repeats):
            for cfg, mode, c in plan:
                target = naive_q if cfg == "naive" else (boxes_q if mode == "client" else "/v1/landmarks")
                probe = bare_probe is not None and (cfg, mode, c) == ("default", "client", c_max)
                if probe and bare_probe:
                    adjacent.append(bare_probe())
                r = _measure_once(ports[cfg], target, image, requests[c], c, scrape=cfg != "naive")
                if probe and bare_probe:
                    adjacent.append(bare_probe())
                samples[(cfg, mode, c)].append(r)
                _log(f"round {rnd + 1}/{repeats} {cfg:12} {mode:6} c={c:<3} {r['faces_per_s']:7.1f} faces/s")
        if profile_s > 0:
            out["profile"] = _profile(procs["default"], boxes_q, image, c_max, profile_s, log_dir)
    for (cfg, mode, c), rs in samples.items():
        agg = _aggregate(rs, requests[c], c)
        agg.update(config=cfg, mode=mode)
        if (cfg, mode, c) == ("default", "client", c_max) and adjacent:
            agg["bare_cascade_adjacent"] = [round(min(adjacent), 1), round(statistics.median(adjacent), 1)]
        (out["naive_runs"] if cfg == "naive" else out["runs"]).append(agg)
    return out


def _profile(
    srv: _Proc, target: str, image: bytes, concurrency: int, seconds: float, log_dir: Path
) -> dict[str, Any]:
    """py-spy samples of the server under the client-box load: share of samples per leaf function."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"available": False, "note": "py-spy is not installed (pip install py-spy)"}
    raw = log_dir / "profile.txt"
    cmd = [
        spy,
        "record",
        "-p",
        str(srv.proc.pid),
        "-d",
        str(int(seconds)),
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(raw),
        "--nonblocking",
        "--threads",
    ]
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_end = time.monotonic() + seconds + 1
    while time.monotonic() < t_end and spy_proc.poll() is None:
        asyncio.run(_load(srv.port, target, image, "image/jpeg", 4 * concurrency, concurrency))
    _, err = spy_proc.communicate(timeout=60)
    if spy_proc.returncode != 0 or not raw.exists():
        return {"available": False, "note": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    return {"available": True, **summarise_profile(raw.read_text())}


CATEGORIES = (  # (name, where to look: any frame of the stack or the leaf only, keys); the first match wins
    ("inference (ONNX Runtime)", "stack", ("onnxruntime",)),
    ("crop (model_store.cascade, Pillow)", "stack", ("cascade.py", "warp_affine")),
    ("decode (Pillow)", "stack", ("decode.py",)),
    ("detect (dlib)", "stack", ("detect.py",)),
    ("JSON / response", "stack", ("to_dict", "responses.py", "json/")),
    ("HTTP (uvicorn, starlette, fastapi)", "leaf", ("uvicorn", "h11", "httptools", "starlette", "fastapi")),
    (
        "event loop / threads / batcher",
        "leaf",
        ("asyncio", "uvloop", "batcher.py", "selectors", "threading", "concurrent"),
    ),
)


def summarise_profile(raw: str) -> dict[str, Any]:
    """py-spy ``raw`` (collapsed stacks, ``thread;frame;...;leaf count``) -> shares by leaf and category."""
    leaves: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[re.sub(r"[-_]?\d+\W*$", "", frames[0].split(" ")[0].strip('"'))[:40]] += count
        leaf = frames[-1]
        leaves[leaf] += count
        for name, where, keys in CATEGORIES:
            hay = stack if where == "stack" else leaf
            if any(k in hay for k in keys):
                cats[name] += count
                break
        else:
            cats["other Python"] += count
    pct = (lambda c: round(100 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "by_category_pct": {k: pct(v) for k, v in cats.most_common()},
        "top_leaves_pct": {k: pct(v) for k, v in leaves.most_common(12)},
        "by_thread_pct": {k: pct(v) for k, v in threads.most_common(8)},
    }


# ------------------------------------------------------------------------------------------ 4. peers
def dlib_peer(pixels: np.ndarray, box: list[float], repeats: int, min_s: float) -> dict[str, Any]:
    if not DLIB_PREDICTOR.exists():
        return {"available": False, "note": f"{DLIB_PREDICTOR} missing (Debian package libdlib-data)"}
    try:
        import dlib
    except ImportError:
        return {"available": False, "note": "dlib is not importable (PyPI dlib-bin)"}
    predictor = dlib.shape_predictor(str(DLIB_PREDICTOR))
    rect = dlib.rectangle(*(round(v) for v in box))
    image = np.ascontiguousarray(pixels)
    fps = [1.0 / _per_call(lambda: predictor(image, rect), min_s) for _ in range(repeats)]
    return {
        "available": True,
        "threads": 1,
        "faces_per_s": _stats(fps),
        "file": str(DLIB_PREDICTOR),
        "note": "dlib's shape predictor runs on one core; its labels are a teacher's, not ground truth",
    }


# ---------------------------------------------------------------------------------------- the image
def bench_image(path: Path | None, box: list[float] | None) -> tuple[bytes, np.ndarray, list[float], str]:
    """JPEG bytes, decoded pixels, a tight client box, and where the image came from."""
    from PIL import Image

    if path is not None:
        data = path.read_bytes()
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        if box is None:
            from runtime.detectors import create_detector

            found = create_detector("dlib_hog", max_side=640, upsample=0, threshold=0.0, instances=1)
            assert found is not None
            dets = found.detect(pixels)
            if not len(dets.boxes):
                raise SystemExit(f"no face detected in {path}; pass --box")
            box = [float(v) for v in dets.boxes[0]]
        return data, pixels, box, str(path)
    from model_store.geometry import tight_box
    from runtime.detectors import create_detector
    from train.export.evaluate import load_synthetic

    model = ModelStore(default_root()).resolve(DEFAULT_MODELS["ibug68"])
    detector = create_detector("dlib_hog", max_side=1024, upsample=0, threshold=0.0, instances=1)
    assert detector is not None
    for sample in load_synthetic({**model.manifest.evaluation["dataset"], "limit": 16}, "ibug68"):
        big = Image.fromarray(sample.image).resize((512, 512), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        pixels = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        if len(detector.detect(pixels).boxes) == 1:
            tb = [round(float(v) * 2, 2) for v in tight_box(sample.points)]
            return buf.getvalue(), pixels, tb, "synthetic validation face (seed 2), 512x512 JPEG q92"
    raise SystemExit("no synthetic face found by the detector; pass --image")


# --------------------------------------------------------------------------------------- the report
def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(st: dict[str, float]) -> str:
    return f"{st['min']:.1f} / {st['median']:.1f}"


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as ratios of figures of this run."""
    bare = report["bare"]
    best = bare["best_cascade"]
    runs = report["service"]["runs"]

    def run(config: str, mode: str, c: int) -> dict[str, Any] | None:
        return next(
            (r for r in runs if r["config"] == config and r["mode"] == mode and r["concurrency"] == c), None
        )

    c_max = max(r["concurrency"] for r in runs)
    sat = max(
        (r for r in runs if r["config"] == "default" and r["mode"] == "client"),
        key=lambda r: r["faces_per_s"]["median"],
    )
    on, off = run("default", "client", c_max), run("batching_off", "client", c_max)
    before = run("before", "client", c_max)
    cores = report["machine"]["cores"]
    one_core = max(
        (r for r in bare["rows"] if r["what"] == "cascade" and r["threads"] == 1),
        key=lambda r: r["faces_per_s"]["median"],
    )
    out: dict[str, Any] = {
        "cascade_pct_of_peak": best["pct_of_peak"]["median"],
        "cascade_best": {
            "batch": best["batch"],
            "threads": best["threads"],
            "spinning": best["spinning"],
            "faces_per_s": best["faces_per_s"]["median"],
        },
        "service_saturation_faces_per_s": sat["faces_per_s"]["median"],
        "service_saturation_concurrency": sat["concurrency"],
        "service_over_bare_cascade": round(sat["faces_per_s"]["median"] / best["faces_per_s"]["median"], 3),
        "bare_cascade_adjacent": on.get("bare_cascade_adjacent") if on else None,
        "service_over_bare_adjacent": (
            round(on["faces_per_s"]["median"] / on["bare_cascade_adjacent"][1], 3)
            if on and on.get("bare_cascade_adjacent")
            else None
        ),
        "batching_gain_at_cmax": round(on["faces_per_s"]["median"] / off["faces_per_s"]["median"], 2)
        if on and off
        else None,
        "after_over_before_client_cmax": round(
            on["faces_per_s"]["median"] / before["faces_per_s"]["median"], 2
        )
        if on and before
        else None,
        "greedy_over_timed": {
            str(c): round(g["faces_per_s"]["median"] / t["faces_per_s"]["median"], 2)
            for c in sorted({r["concurrency"] for r in runs})
            if (g := run("default", "client", c)) and (t := run("timed", "client", c))
        },
        "httptools_uvloop_over_h11_asyncio_cmax": round(
            on["faces_per_s"]["median"] / h11["faces_per_s"]["median"], 2
        )
        if on and (h11 := run("h11_asyncio", "client", c_max))
        else None,
        "wingmark_bare_faces_per_s_per_core": one_core["faces_per_s"]["median"],
        "wingmark_service_faces_per_s_per_core": round(sat["faces_per_s"]["median"] / cores, 1),
    }
    d = report["peers"]["dlib"]
    if d.get("available"):
        out["dlib_faces_per_s_per_core"] = d["faces_per_s"]["median"]
        out["wingmark_bare_per_core_over_dlib"] = round(
            one_core["faces_per_s"]["median"] / d["faces_per_s"]["median"], 2
        )
        out["wingmark_service_per_core_over_dlib"] = round(
            out["wingmark_service_faces_per_s_per_core"] / d["faces_per_s"]["median"], 2
        )
    n = report["peers"].get("naive", {})
    if n.get("available"):
        nb = max(n["runs"], key=lambda r: r["faces_per_s"]["median"])
        out["naive_fastapi_best_faces_per_s"] = nb["faces_per_s"]["median"]
        out["service_over_naive"] = round(sat["faces_per_s"]["median"] / nb["faces_per_s"]["median"], 2)
    out["targets"] = {
        "cascade >= 60% of fp32 peak": out["cascade_pct_of_peak"] >= 60,
        "service >= 0.8x bare cascade": out["service_over_bare_cascade"] >= 0.8,
        "service >= 0.8x bare cascade measured beside it": (out["service_over_bare_adjacent"] or 0) >= 0.8,
        "batching >= 2x over off at c=32": (out["batching_gain_at_cmax"] or 0) >= 2,
    }
    return out


def reading(report: dict[str, Any]) -> list[str]:
    """Sentences computed from the figures: what limits what, on this machine, in this run."""
    m, bare, h = report["machine"], report["bare"], report["headline"]
    out = []
    sgemm = m["numpy_sgemm_pct_of_peak"]
    out.append(
        f"Contention: numpy's SGEMM reached {sgemm} % of the assumed peak during this run (on the idle machine it "
        "reaches about 100 %, 340 GFLOP/s, which also supports the 2-FMA-unit assumption); the load average is "
        f"given above. Percentages of peak are of the whole machine, not of the share this run got."
    )
    cascades = [r for r in bare["rows"] if r["what"] == "cascade"]
    best = bare["best_cascade"]
    same = [r for r in cascades if r["threads"] == best["threads"] and r["spinning"] == best["spinning"]]
    b1 = next((r for r in same if r["batch"] == 1), None)
    if b1:
        frac = b1["faces_per_s"]["median"] / best["faces_per_s"]["median"]
        out.append(
            f"Batching and ONNX Runtime on this CPU: the bare cascade at batch 1 already runs at {100 * frac:.0f} % "
            f"of its best batch ({b1['faces_per_s']['median']} vs {best['faces_per_s']['median']} faces/s, "
            f"threads {best['threads']}), so dynamic batching can buy at most about {1 / frac:.1f}x here from "
            f"inference; measured at the top concurrency: {h['batching_gain_at_cmax']}x. Batching pays on a GPU, "
            "where one face leaves most of the device idle."
        )
    spin = [r for r in cascades if r["threads"] == 2 and r["batch"] == best["batch"]]
    if len(spin) == 2:
        on = next(r for r in spin if r["spinning"])["faces_per_s"]["median"]
        off = next(r for r in spin if not r["spinning"])["faces_per_s"]["median"]
        out.append(
            f"ORT thread spinning: 2 threads at batch {best['batch']} give {on} faces/s with ORT's busy-waiting "
            f"workers and {off} without; on shared cores spinning workers fight every other thread, which is why "
            "the service now turns spinning off."
        )
    if "dlib_faces_per_s_per_core" in h:
        out.append(
            f"dlib: its 68-point predictor (regression trees, about {1000 / h['dlib_faces_per_s_per_core']:.2f} ms "
            f"per face) does {h['dlib_faces_per_s_per_core']} faces/s on one core against "
            f"{h['wingmark_bare_faces_per_s_per_core']} for the bare CNN-6/7 cascade "
            f"({bare['gflop_per_face']['cascade']} GFLOP per face) on one core: a CNN cascade cannot match it on "
            "speed; its case is accuracy on hard poses (issue 9), not throughput."
        )
    if h.get("service_over_naive"):
        out.append(
            f"Against a naive FastAPI endpoint running the same models per request: {h['service_over_naive']}x "
            "at saturation."
        )
    return out


def write_markdown(report: dict[str, Any], path: Path, img: str) -> None:
    m, bare, h = report["machine"], report["bare"], report["headline"]
    L: list[str] = []
    L += [
        "# Benchmarks",
        "",
        f"Written by `wingmark benchmark{' --quick' if report['quick'] else ''}` on {report['created']} "
        f"in {report['duration_s'] / 60:.1f} min. Every headline figure is a ratio of two measurements of this "
        f"one run; each measurement was repeated {report['repeats']} times and is given as **min / median** "
        f"over the repeats. The machine is shared (load average at start `{report['loadavg']['start']}`, "
        f"at end `{report['loadavg']['end']}`), so absolute numbers are noisy; ratios less so.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['model_name']}, {m['cores']} cores at {m['mhz']} MHz; vector flags: {', '.join(m['vector_flags'])}",
        f"- fp32 peak: **{m['peak']['gflops']:.1f} GFLOP/s** = {m['peak']['assumption']}",
        f"- check: numpy SGEMM (1536^2) reaches {m['numpy_sgemm_gflops']} GFLOP/s = {m['numpy_sgemm_pct_of_peak']} % of that peak",
        f"- GPU: {report['gpu']}",
        f"- image: {report['image']['source']} ({report['image']['bytes']} bytes, "
        f"{report['image']['width']}x{report['image']['height']}); client box {report['image']['box']}",
        f"- model: {report['model']}",
        "",
    ]
    L += ["## Targets (this run)", "", _row(["target", "measured", "met"]), _row(["---"] * 3)]
    L.append(
        _row(
            [
                "cascade through ORT >= 60 % of fp32 peak at its best batch",
                f"{h['cascade_pct_of_peak']} % (batch {h['cascade_best']['batch']}, threads {h['cascade_best']['threads']})",
                h["targets"]["cascade >= 60% of fp32 peak"],
            ]
        )
    )
    L.append(
        _row(
            [
                "service at saturation (client boxes) >= 0.8x bare cascade",
                f"{h['service_over_bare_cascade']}x ({h['service_saturation_faces_per_s']} / {h['cascade_best']['faces_per_s']} faces/s)",
                h["targets"]["service >= 0.8x bare cascade"],
            ]
        )
    )
    L.append(
        _row(
            [
                "dynamic batching >= 2x over max batch 1 at the top concurrency",
                f"{h['batching_gain_at_cmax']}x",
                h["targets"]["batching >= 2x over off at c=32"],
            ]
        )
    )
    if h.get("service_over_bare_adjacent"):
        L.append(
            _row(
                [
                    "the service at the top concurrency against the bare cascade measured right before and after each of its rounds",
                    f"{h['service_over_bare_adjacent']}x (bare min / median {h['bare_cascade_adjacent']} faces/s)",
                    h["targets"]["service >= 0.8x bare cascade measured beside it"],
                ]
            )
        )
    if "dlib_faces_per_s_per_core" in h:
        L.append(
            _row(
                [
                    "wingmark cascade faces/s per core vs dlib's 68-point predictor",
                    f"bare {h['wingmark_bare_faces_per_s_per_core']} / service {h['wingmark_service_faces_per_s_per_core']} vs dlib {h['dlib_faces_per_s_per_core']} ({h['wingmark_bare_per_core_over_dlib']}x / {h['wingmark_service_per_core_over_dlib']}x)",
                    "reported",
                ]
            )
        )
    if h.get("after_over_before_client_cmax"):
        L.append(
            _row(
                [
                    "this issue's serving changes (default vs before settings, client boxes, top concurrency)",
                    f"{h['after_over_before_client_cmax']}x",
                    "-",
                ]
            )
        )
    if h.get("greedy_over_timed"):
        L.append(
            _row(
                [
                    "greedy batching (default) over timed (5 ms wait), client boxes, faces/s",
                    ", ".join(f"c={c}: {v}x" for c, v in h["greedy_over_timed"].items()),
                    "-",
                ]
            )
        )
    if h.get("httptools_uvloop_over_h11_asyncio_cmax"):
        L.append(
            _row(
                [
                    "httptools + uvloop over h11 + asyncio, client boxes, top concurrency",
                    f"{h['httptools_uvloop_over_h11_asyncio_cmax']}x",
                    "-",
                ]
            )
        )
    L += ["", "## Reading this run", ""] + [f"- {line}" for line in reading(report)]
    L += [
        "",
        "## Bare models through ONNX Runtime",
        "",
        "FLOPs counted from the ONNX graphs (service.perf): "
        + ", ".join(f"{k} {v} GFLOP/face" for k, v in bare["gflop_per_face"].items())
        + ". "
        "Inputs are prepared in advance: this is inference only. 'spin' is ORT's default busy-waiting thread pool; "
        "the service runs with spinning off (it shares the cores with decoding and HTTP).",
        "",
        _row(
            ["what", "threads", "batch", "faces/s (min / median)", "GFLOP/s (median)", "% of peak (median)"]
        ),
        _row(["---"] * 6),
    ]
    for r in bare["rows"]:
        L.append(
            _row(
                [
                    r["what"],
                    f"{r['threads']}{'' if r['spinning'] else ' no-spin'}",
                    r["batch"],
                    _fmt(r["faces_per_s"]),
                    r["gflops"]["median"],
                    r["pct_of_peak"]["median"],
                ]
            )
        )
    casts = "; ".join(
        f"{f}: {c['stored']} Cast nodes stored, {c['after_ort_optimisation']} after ORT's graph optimisation"
        for f, c in bare["casts"].items()
    )
    L += [
        "",
        f"fp16-stored weights: {casts}. ORT folds the weight casts into fp32 constants when the session is "
        "created, so no run pays for them; the published 1.0.0 files stay as they are.",
        "",
        f"![bare models]({img}/benchmarks_bare.png)",
        "",
    ]
    L += [
        "## The service (uvicorn on 127.0.0.1, the client on the same cores)",
        "",
        "All configurations and the naive peer are up at once and measured in rounds (each round runs every row once), so a change of the machine's load hits them alike. Configurations: `default` (this branch's settings), `batching_off` (WINGMARK_MAX_BATCH_SIZE=1), `ort_1_thread` (the default with WINGMARK_ORT_THREADS=1), "
        "`timed` (WINGMARK_BATCH_POLICY=timed: every batch waits up to the 5 ms queue delay, the policy before; the default is greedy: a batch runs as soon as the device is free), "
        "`h11_asyncio` (uvicorn with pure-Python h11 and asyncio's loop instead of httptools and uvloop), `before` "
        "(the settings before issue 11: timed batching, h11 + asyncio, ORT 1 thread with spinning, 2 pool threads, the whole cascade on the device thread; the faster Pillow crop is in every configuration, so `before` understates the change). "
        "Modes: `client` (the client sends the face box) and `detect` (dlib HOG in the service).",
        "",
        _row(
            [
                "config",
                "mode",
                "concurrency",
                "requests x repeats",
                "faces/s (min / median)",
                "p50 ms",
                "p95 ms",
                "p99 ms",
            ]
        ),
        _row(["---"] * 8),
    ]
    for r in report["service"]["runs"]:
        lat = r["latency_ms"]
        L.append(
            _row(
                [
                    r["config"],
                    r["mode"],
                    r["concurrency"],
                    f"{r['requests']} x {r['repeats']}",
                    _fmt(r["faces_per_s"]),
                    lat["p50"],
                    lat["p95"],
                    lat["p99"],
                ]
            )
        )
    L += ["", f"![service]({img}/benchmarks_service.png)", ""]
    L += [
        "## Peers on the same cores, image and box",
        "",
        _row(["peer", "faces/s (min / median)", "note"]),
        _row(["---"] * 3),
    ]
    d = report["peers"]["dlib"]
    L.append(
        _row(
            [
                "dlib 68-point shape predictor (1 core)",
                _fmt(d["faces_per_s"]) if d.get("available") else "missing",
                d.get("note", ""),
            ]
        )
    )
    n = report["peers"].get("naive", {})
    for r in n.get("runs", []):
        L.append(
            _row(
                [
                    f"naive FastAPI, same ONNX models per request, c={r['concurrency']}",
                    _fmt(r["faces_per_s"]),
                    f"p50 {r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms",
                ]
            )
        )
    L += [
        "",
        (
            "dlib's NME on the real held-out set: 0 by construction, since its 68 points are that set's "
            "labels (kept where MediaPipe agrees; docs/real_data.md); the second teacher, MediaPipe Face "
            "Mesh, and the default models are measured against them there (`wingmark data bench`)."
        ),
        "",
    ]
    L += [
        "## Where the time goes",
        "",
        "Mean milliseconds per request from the service's own stage histograms (`wingmark_stage_duration_seconds`), "
        "between scrapes around each run (median over repeats). `stageN` is the run time of the batch the request's "
        "faces were in (shared by the batch), `stageN_queue` the wait before it; `crop` covers every stage's crops.",
        "",
    ]
    keys = [
        "decode",
        "detect",
        "crop",
        "stage1_queue",
        "stage1",
        "stage2_queue",
        "stage2",
        "map",
        "serialise",
        "total",
    ]
    L += [_row(["config", "mode", "c"] + keys), _row(["---"] * (3 + len(keys)))]
    for r in report["service"]["runs"]:
        sm = r.get("stage_ms_per_request", {})
        L.append(_row([r["config"], r["mode"], r["concurrency"]] + [sm.get(k, "") for k in keys]))
    p = report["service"].get("profile", {})
    if p.get("available"):
        L += [
            "",
            f"py-spy, {p['samples']} samples of the service under client-box load at the top concurrency "
            "(all threads, idle waits excluded):",
            "",
            _row(["category", "% of samples"]),
            _row(["---"] * 2),
        ]
        L += [_row([k, v]) for k, v in p["by_category_pct"].items()]
        L += ["", _row(["leaf function", "% of samples"]), _row(["---"] * 2)]
        L += [_row([k.replace("|", "/"), v]) for k, v in p["top_leaves_pct"].items()]
    elif p:
        L += ["", f"Profiler: {p.get('note')}"]
    L += [""]
    path.write_text("\n".join(L) + "\n")


def write_plots(report: dict[str, Any], img_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    img_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for what in ("stage1", "stage2", "cascade"):
        for threads, spinning in ((1, True), (2, True), (2, False)):
            rows = [
                r
                for r in report["bare"]["rows"]
                if r["what"] == what and r["threads"] == threads and r["spinning"] == spinning
            ]
            if rows:
                ax.plot(
                    [r["batch"] for r in rows],
                    [r["faces_per_s"]["median"] for r in rows],
                    marker="o",
                    label=f"{what}, {threads} thr{'' if spinning else ' no-spin'}",
                )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch",
        ylabel="faces/s (median)",
        title="ONNX Runtime, inference only",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(img_dir / "benchmarks_bare.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    runs = report["service"]["runs"]
    for mode in ("client", "detect"):
        rs = [r for r in runs if r["config"] == "default" and r["mode"] == mode]
        ax.plot(
            [r["concurrency"] for r in rs],
            [r["faces_per_s"]["median"] for r in rs],
            marker="o",
            label=f"service, {mode}",
        )
    for config, marker in (("batching_off", "x"), ("ort_1_thread", "d"), ("before", "s")):
        rs = [r for r in runs if r["config"] == config]
        ax.scatter(
            [r["concurrency"] for r in rs],
            [r["faces_per_s"]["median"] for r in rs],
            marker=marker,
            label=f"{config} ({', '.join(r['mode'] for r in rs)})",
        )
    best = report["bare"]["best_cascade"]["faces_per_s"]["median"]
    ax.axhline(best, ls="--", c="k", lw=1, label="bare cascade, best batch")
    ax.axhline(0.8 * best, ls=":", c="k", lw=1, label="0.8x bare")
    n = report["peers"].get("naive", {})
    if n.get("available"):
        ax.plot(
            [r["concurrency"] for r in n["runs"]],
            [r["faces_per_s"]["median"] for r in n["runs"]],
            marker="^",
            label="naive FastAPI",
        )
    ax.set(xscale="log", xlabel="concurrent clients", ylabel="faces/s (median)", title="Service throughput")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(img_dir / "benchmarks_service.png", dpi=110)
    plt.close(fig)
    return ["benchmarks_bare.png", "benchmarks_service.png"]


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
        "loadavg": {"start": _loadavg()},
        "model": args.model,
    }
    _log(f"wingmark benchmark{' --quick' if quick else ''}: load average {report['loadavg']['start']}")
    report["gpu"] = (
        "none on this machine: ONNX Runtime CPU only (scripts/gpu_check.sh is the GPU check; it was not run)"
    )
    report["machine"] = machine(cores)
    _log(
        f"peak {report['machine']['peak']['gflops']:.1f} GFLOP/s assumed; numpy SGEMM {report['machine']['numpy_sgemm_gflops']} GFLOP/s"
    )
    model = ModelStore(default_root()).resolve(args.model)
    box_arg = [float(v) for v in args.box.split(",")] if args.box else None
    data, pixels, box, source = bench_image(args.image, box_arg)
    report["image"] = {
        "source": source,
        "bytes": len(data),
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "box": box,
    }
    report["bare"] = bare_models(model, report["machine"]["peak"]["gflops"], repeats, min_s, batches)
    with tempfile.TemporaryDirectory(prefix="wingmark-bench-") as tmp:
        log_dir = Path(tmp)
        best = report["bare"]["best_cascade"]
        probe = _bare_probe(model, best["threads"], best["spinning"], best["batch"], min_s)
        report["service"] = service_runs(
            data,
            box,
            model=args.model,
            repeats=repeats,
            requests=requests,
            concurrencies=concurrencies,
            log_dir=log_dir,
            profile_s=0 if args.no_profile else (4 if quick else 8),
            bare_probe=probe,
        )
        report["peers"] = {"dlib": dlib_peer(pixels, box, repeats, min_s)}
        if report["peers"]["dlib"].get("available"):
            _log(
                f"dlib shape predictor: {report['peers']['dlib']['faces_per_s']['median']:.1f} faces/s on 1 core"
            )
        report["peers"]["naive"] = {"available": True, "runs": report["service"].pop("naive_runs")}
    report["headline"] = headline(report)
    report["loadavg"]["end"] = _loadavg()
    report["duration_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    write_plots(report, args.out / "img")
    write_markdown(report, args.out / "benchmarks.md", "img")
    _log(
        f"done in {report['duration_s'] / 60:.1f} min: {args.out / 'benchmarks.md'}; targets {report['headline']['targets']}"
    )
    return 0
