"""``wingmark bench``: a bounded load test of a running service on this machine.

For each mode (the service's detector, or client boxes) and each concurrency, N requests with one
image are sent by C concurrent clients; the report gives latency percentiles, requests/s and faces/s,
and the server's own mean stage timings. It is printed and written as JSON.

    wingmark bench --image face.jpg --requests 200 --concurrency 1,16 --out bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

__all__ = ["main", "percentile", "run_bench"]

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def _run_one(
    client: httpx.AsyncClient,
    data: bytes,
    content_type: str,
    params: dict[str, str],
    requests: int,
    concurrency: int,
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    views: set[int] = set()  # the views the answers say ran
    faces = 0
    server: dict[str, list[float]] = {}
    errors: dict[str, str] = {}  # one sample body per error status
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, faces
        while next_index < requests:
            next_index += 1
            t0 = time.perf_counter()
            try:
                r = await client.post(
                    "/v1/landmarks", content=data, headers={"content-type": content_type}, params=params
                )
            except httpx.HTTPError:
                statuses[0] += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            statuses[r.status_code] += 1
            if r.status_code != 200 and str(r.status_code) not in errors:
                errors[str(r.status_code)] = r.text[:300]
            if r.status_code == 200:
                body = r.json()
                faces += len(body["faces"])
                views.add(int(body.get("views", 1)))
                for k, v in body["timings_ms"].items():
                    server.setdefault(k, []).append(float(v))

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t_start
    ok = statuses.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "wall_s": round(wall, 3),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "mean": round(statistics.fmean(latencies), 2) if latencies else float("nan"),
            "max": round(max(latencies), 2) if latencies else float("nan"),
        },
        "requests_per_s": round(ok / wall, 2) if wall > 0 else 0.0,
        "faces_per_s": round(faces / wall, 2) if wall > 0 else 0.0,
        "faces_per_request": round(faces / ok, 3) if ok else 0.0,
        "views": sorted(views),
        "server_mean_ms": {k: round(statistics.fmean(v), 2) for k, v in server.items()},
        "error_samples": errors,
    }


async def run_bench(
    url: str,
    image: Path,
    *,
    requests: int,
    concurrencies: list[int],
    modes: list[str],
    scheme: str | None = None,
    box: list[float] | None = None,
    warmup: int = 5,
    views: int | None = None,
) -> dict[str, Any]:
    """Run every (mode, concurrency) and return the report (``views``: each request's, None: the
    service's)."""
    from tools.client import guess_content_type
    from tools.studies.detect_bench_core import cpu_info

    data = image.read_bytes()
    content_type = guess_content_type(data)
    base: dict[str, str] = {"scheme": scheme} if scheme else {}
    if views is not None:
        base["views"] = str(views)
    limits = httpx.Limits(
        max_connections=max(concurrencies) + 2, max_keepalive_connections=max(concurrencies) + 2
    )
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(600):  # wait up to a minute for the service to start and load its models
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit(f"wingmark bench: {url} is not ready")
        models = (await client.get("/v1/models")).json().get("models", [])
        runs: list[dict[str, Any]] = []
        for mode in modes:
            params = dict(base)
            if mode == "client_boxes":
                if box is None:  # use the detector's box for this image, found once
                    headers = {"content-type": content_type}
                    r = await client.post("/v1/landmarks", content=data, headers=headers, params=base)
                    r.raise_for_status()
                    faces = r.json()["faces"]
                    if not faces:
                        raise SystemExit("wingmark bench: no face detected in the image; pass --box")
                    box = faces[0]["box"]
                params["boxes"] = json.dumps([box])
            await _run_one(client, data, content_type, params, warmup, min(warmup, max(concurrencies)))
            for c in concurrencies:
                result = await _run_one(client, data, content_type, params, requests, c)
                result["mode"] = mode
                runs.append(result)
                lat = result["latency_ms"]
                print(f"{mode:>13} c={c:<3} ok {result['ok']}/{requests}  p50 {lat['p50']:.1f} ms  "
                      f"p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  {result['requests_per_s']:.1f} req/s  "
                      f"{result['faces_per_s']:.1f} faces/s", flush=True)  # fmt: skip
    return {
        "url": url,
        "image": str(image),
        "image_bytes": len(data),
        "box": box,
        "views": views,
        "models": models,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpu": {k: v for k, v in cpu_info().items() if k in ("model", "flags")},
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": runs,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wingmark bench", description="Load-test a running wingmark service.")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="service URL (loopback only by default)")
    p.add_argument(
        "--image", type=Path, required=True, help="image to send (with a face for the detector mode)"
    )
    p.add_argument("--requests", type=int, default=200, help="requests per run (max 100000)")
    p.add_argument("--concurrency", default="1,16", help="comma-separated client counts, e.g. 1,16")
    p.add_argument("--mode", choices=["detector", "client_boxes", "both"], default="both")
    p.add_argument("--box", help="client box x1,y1,x2,y2 (default: the detector's box for the image)")
    p.add_argument("--scheme", choices=["ibug68", "aflw19"])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--views", type=int, choices=[1, 5, 9], help="each request's views (default: the service's setting)"
    )
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON report path")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    args = p.parse_args(argv)
    host = urlparse(args.url).hostname or ""
    if host not in LOOPBACK and not args.allow_remote:
        p.error(f"refusing to load-test {host!r}: only 127.0.0.1/localhost unless --allow-remote")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not concurrencies or min(concurrencies) < 1 or max(concurrencies) > 256:
        p.error("--concurrency: integers between 1 and 256")
    if not 1 <= args.requests <= 100_000:
        p.error("--requests: between 1 and 100000")
    box = [float(v) for v in args.box.split(",")] if args.box else None
    if box is not None and len(box) != 4:
        p.error("--box: x1,y1,x2,y2")
    modes = ["detector", "client_boxes"] if args.mode == "both" else [args.mode]
    report = asyncio.run(
        run_bench(args.url, args.image, requests=args.requests, concurrencies=concurrencies, modes=modes,
                  scheme=args.scheme, box=box, warmup=args.warmup, views=args.views)
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.out}")
    return 0
