"""The service under load for ``wingmark benchmark``: real uvicorn processes on 127.0.0.1 (every
configuration and the naive peer up at once), a lean keep-alive client, the service's own stage
histograms, and a py-spy profile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench import percentile
from tools.benchmark.measure import log, spread
from tools.net import free_port

__all__ = ["CONCURRENCY", "SERVICE_CONFIGS", "service_runs", "summarise_profile"]

CONCURRENCY = (1, 8, 32)


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

    port = free_port()
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
        "faces_per_s": spread([r["faces_per_s"] for r in samples]),
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
    "float": {"WINGMARK_PRECISION": "float"},  # the default picks int8 on CPUs with int8 dot products
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


NAIVE_ARGV = [sys.executable, "-m", "uvicorn", "--factory", "tools.naive:create_app", "--host", "127.0.0.1",
              "--port", "{port}", "--log-level", "warning"]  # fmt: skip


def service_runs(
    images: dict[str, tuple[bytes, list[float]]],
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
    measured), in rounds: each round measures every (config, mode, concurrency, image) once, so a
    change of the machine's load hits all of them alike. ``images``: label -> (JPEG, client box); the
    first is the main image (every configuration), the others get the default service with client
    boxes at each concurrency and the float service at the top one. ``bare_probe`` (faces/s of the
    bare cascade) is measured right before and after each default client-box run at the top
    concurrency."""
    labels = list(images)
    main = labels[0]
    boxes_q = {k: "/v1/landmarks?boxes=" + json.dumps([b]).replace(" ", "") for k, (_, b) in images.items()}
    naive_q = "/landmarks?box=" + ",".join(f"{v:.2f}" for v in images[main][1])
    argv = [sys.executable, "-m", "tools.cli", "serve"]
    base_env = {"WINGMARK_MODELS": model, "WINGMARK_LOG_LEVEL": "warning"}
    c_max = max(concurrencies)
    plan: list[tuple[str, str, int, str]] = [
        ("default", mode, c, main) for mode in ("client", "detect") for c in concurrencies
    ]
    plan += [("float", "client", c_max, main)]
    plan += [("batching_off", "client", c_max, main), ("batching_off", "detect", c_max, main)]
    plan += [("ort_1_thread", "client", c_max, main), ("ort_1_thread", "detect", c_max, main)]
    plan += [
        ("timed", "client", 1, main),
        ("timed", "client", c_max, main),
        ("h11_asyncio", "client", c_max, main),
    ]
    plan += [("before", "client", c_max, main), ("before", "detect", c_max, main)]
    plan += [("naive", "client", 1, main), ("naive", "client", c_max, main)]
    for other in labels[1:]:
        plan += [("default", "client", c, other) for c in concurrencies] + [("float", "client", c_max, other)]
    samples: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {k: [] for k in plan}
    adjacent: dict[str, list[float]] = {k: [] for k in labels}
    out: dict[str, Any] = {"runs": [], "naive_runs": []}

    def target(cfg: str, mode: str, image: str) -> str:
        return naive_q if cfg == "naive" else (boxes_q[image] if mode == "client" else "/v1/landmarks")

    with contextlib.ExitStack() as stack:
        procs = {
            cfg: stack.enter_context(_server(argv, {**base_env, **env}, "/readyz", log_dir, f"service-{cfg}"))
            for cfg, env in SERVICE_CONFIGS.items()
        }
        procs["naive"] = stack.enter_context(
            _server(NAIVE_ARGV, {"WINGMARK_NAIVE_MODEL": model}, "/openapi.json", log_dir, "naive")
        )
        ports = {cfg: p.port for cfg, p in procs.items()}
        for cfg, mode, c, image in plan:  # warm every server and path once
            body = images[image][0]
            asyncio.run(
                _load(ports[cfg], target(cfg, mode, image), body, "image/jpeg", min(requests[c], 2 * c), c)
            )
        for rnd in range(repeats):
            for cfg, mode, c, image in plan:
                probe = bare_probe is not None and (cfg, mode, c) == ("default", "client", c_max)
                if probe and bare_probe:
                    adjacent[image].append(bare_probe())
                r = _measure_once(
                    ports[cfg],
                    target(cfg, mode, image),
                    images[image][0],
                    requests[c],
                    c,
                    scrape=cfg != "naive",
                )
                if probe and bare_probe:
                    adjacent[image].append(bare_probe())
                samples[(cfg, mode, c, image)].append(r)
                fps = r["faces_per_s"]
                log(f"round {rnd + 1}/{repeats} {image:4} {cfg:12} {mode:6} c={c:<3} {fps:7.1f} faces/s")
        if profile_s > 0:
            out["profile"] = _profile(
                procs["default"], boxes_q[main], images[main][0], c_max, profile_s, log_dir
            )
            for other in labels[1:]:
                out[f"profile_{other}"] = _profile(
                    procs["default"], boxes_q[other], images[other][0], c_max, profile_s, log_dir
                )
    for (cfg, mode, c, image), rs in samples.items():
        agg = _aggregate(rs, requests[c], c)
        agg.update(config=cfg, mode=mode, image=image)
        if (cfg, mode, c) == ("default", "client", c_max) and adjacent[image]:
            agg["bare_cascade_adjacent"] = [
                round(min(adjacent[image]), 1),
                round(statistics.median(adjacent[image]), 1),
            ]
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
    ("crop (model_store.crop, to_input)", "stack", ("cascade.py", "crop.py", "preprocess.py")),
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
