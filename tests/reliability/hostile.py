"""Issue 20's checks against a real server: hostile requests beside good ones, client hang-ups, odd images.

- :func:`run_hostile`: the latency of good requests from one client, idle and while another client
  keeps sending a hostile request (a 40-megapixel PNG with 32 whole-image boxes; or, from two clients,
  a TIFF with 40,000 chained IFDs); each good answer is checked against its idle answer.
- :func:`run_disconnects`: clients that hang up mid-upload, and clients that send a whole request that
  needs detection and hang up at once; the server's 500 and 499 counts, the detections it completed
  and the CPU time it spent on them, and whether its log holds a traceback.
- :func:`run_odd_images`: images the adversarial test found mishandled (malformed EXIF orientation, a
  float image in 0..1, an MPO, a TIFF whose next-IFD pointer is garbage), each checked against what
  Pillow itself makes of it.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image, ImageOps

from tests.e2e.helpers import metric
from tests.reliability.suite import GoodRequest, _head, check_good, good_requests, landmarks_of, percentile
from tests.service.images import encode, exif_orientation_jpeg, gradient, mpo, tiff_ifd_chain

__all__ = ["hostile_png", "run_disconnects", "run_hostile", "run_odd_images"]

ENDPOINT = "/v1/landmarks"
HOSTILE_SIDE = 6324  # 6324^2 = 39,992,976 pixels: just under the default 40-megapixel limit


def hostile_png(side: int = HOSTILE_SIDE) -> bytes:
    """A ~150 KB PNG of ``side`` x ``side`` pixels (a grid on black: it compresses very well)."""
    image = np.zeros((side, side, 3), np.uint8)
    image[::64] = 200
    image[:, ::64] = 90
    return encode(image, "PNG")


def _good_run(url: str, goods: list[GoodRequest], refs: list[Any], n: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(n):
            t0 = time.perf_counter()
            problem = check_good(c, goods[i % len(goods)], refs[i % len(goods)])
            latencies.append((time.perf_counter() - t0) * 1000)
            if problem:
                errors.append(problem)
    return {
        "requests": n,
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "max_ms": round(max(latencies), 1),
    }


def _hammer(
    url: str, send: Callable[[httpx.Client], httpx.Response], stop: threading.Event
) -> dict[str, Any]:
    """Send one hostile request after another until ``stop``; statuses and durations."""
    statuses: dict[str, int] = {}
    seconds: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as c:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status = str(send(c).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            seconds.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    return {"statuses": statuses, "mean_seconds": round(float(np.mean(seconds)), 2) if seconds else None}


def run_hostile(url: str, *, good_requests_per_run: int = 60, pid: int | None = None) -> dict[str, Any]:
    """Good requests' latency idle and beside each hostile load; with the server's ``pid``, also what
    one request of each kind costs the server (its process and children, e.g. the decode process)."""
    goods = good_requests(4)
    with httpx.Client(base_url=url, timeout=60) as c:
        refs = [landmarks_of(g.post(c)) for g in goods]
        for g in goods * 3:  # warm-up
            g.post(c)
    png = hostile_png()
    tiff = tiff_ifd_chain(40_000)
    whole = [[0, 0, HOSTILE_SIDE, HOSTILE_SIDE]] * 32

    def big(c: httpx.Client) -> httpx.Response:
        return c.post(
            ENDPOINT, content=png, headers={"content-type": "image/png"}, params={"boxes": str(whole)}
        )

    def ifds(c: httpx.Client) -> httpx.Response:
        return c.post(
            ENDPOINT, content=tiff, headers={"content-type": "image/tiff"}, params={"box": "1,1,15,15"}
        )

    def good(c: httpx.Client) -> httpx.Response:  # the control: two more clients like the measured one
        return goods[0].post(c)

    idle = _good_run(url, goods, refs, good_requests_per_run)
    out: dict[str, Any] = {
        "cpu": _cpu_model(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "idle": idle,
        "hostile_requests": {
            "40mp_32_boxes": f"{len(png)} B PNG, {HOSTILE_SIDE} px square, 32 whole-image boxes, 1 client",
            "two_40000_ifd_tiffs": f"{len(tiff)} B TIFF, 40,000 chained IFDs, two clients",
            "control_two_good_clients": "not hostile: two clients sending a good request one after another",
        },
    }
    runs = [("40mp_32_boxes", big, 1), ("two_40000_ifd_tiffs", ifds, 2)]
    runs.append(("control_two_good_clients", good, 2))
    before = idle
    for label, send, clients in runs:
        stop = threading.Event()
        with ThreadPoolExecutor(clients) as pool:
            hammers = [pool.submit(_hammer, url, send, stop) for _ in range(clients)]
            time.sleep(1.0)  # the hostile requests are under way
            loaded = _good_run(url, goods, refs, good_requests_per_run)
            stop.set()
            results = [h.result(timeout=180) for h in hammers]
        time.sleep(0.5)  # the last hostile request is answered
        after = _good_run(url, goods, refs, good_requests_per_run)
        # the baseline: idle runs just before and just after (the shared machine's load drifts)
        base = round((before["p50_ms"] + after["p50_ms"]) / 2, 1)
        loaded["idle_p50_ms"] = base
        loaded["p50_over_idle_p50"] = round(loaded["p50_ms"] / base, 2)
        loaded["p95_over_idle_p50"] = round(loaded["p95_ms"] / base, 2)
        loaded["hostile"] = results
        out[label] = loaded
        before = after
    if pid is not None:
        kinds = (("good", good, 20), ("40mp_32_boxes", big, 2), ("two_40000_ifd_tiffs", ifds, 20))
        out["server_cpu_ms_per_request"] = {k: _server_cost(url, send, n, pid) for k, send, n in kinds}
    return out


def _server_cost(url: str, send: Callable[[httpx.Client], httpx.Response], n: int, pid: int) -> float:
    """Server CPU ms per request (process and descendants), ``n`` requests one after another."""
    with httpx.Client(base_url=url, timeout=120) as c:
        cpu0 = _tree_cpu_seconds(pid)
        for _ in range(n):
            send(c)
        return round((_tree_cpu_seconds(pid) - cpu0) / n * 1000, 2)


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a child's time counts while it runs)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += _cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def _cpu_model() -> str:
    """``AMD EPYC, 2 cores (avx2 avx512f avx512_vnni)``: the model and the SIMD flags speed depends on."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip() + ", "
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = " ".join(
        f for f in ("sse4_2", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags
    )
    return f"{model}{os.cpu_count()} cores" + (f" ({simd})" if simd else "")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _metrics(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=30).text


def _abandon(url: str, head: bytes, body: bytes) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10) as sock:
        sock.sendall(head + body)
    # closed at once: the server sees the hang-up while it uploads or works


def run_disconnects(url: str, pid: int, server_log: Callable[[], str], *, n: int = 200) -> dict[str, Any]:
    photo = encode(np.asarray(Image.fromarray(gradient(80, 60)).resize((640, 480))), "JPEG", quality=90)
    full_head = _head("POST", ENDPOINT, {"content-type": "image/jpeg", "content-length": str(len(photo))})
    with httpx.Client(base_url=url, timeout=60) as c:  # what one detection request costs
        c.post(ENDPOINT, content=photo, headers={"content-type": "image/jpeg"})
        cpu0 = _cpu_seconds(pid)
        t0 = time.perf_counter()
        for _ in range(5):
            assert c.post(ENDPOINT, content=photo, headers={"content-type": "image/jpeg"}).status_code == 200
        detect_s = (_cpu_seconds(pid) - cpu0) / 5
        one_request_s = (time.perf_counter() - t0) / 5
    result: dict[str, Any] = {"detection_request_cpu_seconds": round(detect_s, 4),
                              "detection_request_seconds": round(one_request_s, 4)}  # fmt: skip
    for label, body in (("mid_upload", photo[: len(photo) // 2]), ("after_body_with_detection", photo)):
        start = _metrics(url)
        cpu0 = _cpu_seconds(pid)
        t0 = time.perf_counter()
        for _ in range(n):
            _abandon(url, full_head, body)
        want = metric(start, "wingmark_http_requests_total", status="499") + n
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            end = _metrics(url)
            if metric(end, "wingmark_http_requests_total", status="499") >= want:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # work still running would show in the CPU time
        end = _metrics(url)

        def delta(name: str, **labels: str) -> float:
            return metric(end, name, **labels) - metric(start, name, **labels)  # noqa: B023

        result[label] = {
            "clients": n,
            "added_500": int(delta("wingmark_http_requests_total", status="500")),
            "added_499": int(delta("wingmark_http_requests_total", status="499")),
            "added_rejected_client_disconnected": int(
                delta("wingmark_rejected_requests_total", reason="client_disconnected")
            ),
            "detections_completed": int(delta("wingmark_stage_duration_seconds_count", stage="detect")),
            "server_cpu_seconds": round(_cpu_seconds(pid) - cpu0, 2),
            "cpu_seconds_if_all_ran": round(detect_s * n, 2) if "detection" in label else None,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    text = server_log()
    result["tracebacks_in_log"] = text.count("Traceback")
    result["disconnect_log_lines"] = sum("client disconnected" in line for line in text.splitlines())
    return result


def run_odd_images(url: str) -> dict[str, Any]:
    """Each odd image with a client box: 200, the size Pillow gives it, and (float image) the landmarks
    of the same picture sent as an 8-bit PNG (a float image read as black would answer others)."""
    stored = np.asarray(Image.fromarray(gradient(64, 48)).resize((320, 240)))
    grey = stored[..., 0]
    cases = {
        "EXIF orientation as ASCII '6'": exif_orientation_jpeg(stored, "ASCII", "6"),
        "EXIF orientation as RATIONAL 6/1": exif_orientation_jpeg(stored, "RATIONAL", (6, 1)),
        "EXIF orientation as FLOAT 6.5": exif_orientation_jpeg(stored, "FLOAT", 6.5),
        "float TIFF in 0..1": encode(Image.fromarray(grey.astype(np.float32) / 255.0, mode="F"), "TIFF"),
        "MPO (JPEG with a second picture)": mpo(stored, 255 - stored),
        "TIFF with a garbage next-IFD pointer": _garbage_next_ifd(stored),
    }
    box = {"box": "40,30,200,200"}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        plain = c.post(
            ENDPOINT, content=encode(grey, "PNG"), headers={"content-type": "image/png"}, params=box
        )
        for name, data in cases.items():
            r = c.post(
                ENDPOINT, content=data, headers={"content-type": "application/octet-stream"}, params=box
            )
            record: dict[str, Any] = {"status": r.status_code, "ok": False}
            if r.status_code == 200:
                body = r.json()
                im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
                record["size"] = [body["image"]["width"], body["image"]["height"]]
                record["pillow_size"] = list(im.size)
                record["ok"] = record["size"] == record["pillow_size"]
                if name.startswith("float"):
                    diff = np.abs(np.subtract(landmarks_of(r), landmarks_of(plain))).max()
                    record["max_px_from_8_bit_answer"] = round(float(diff), 2)
                    record["ok"] = bool(record["ok"] and diff < 1.0)
            out[name] = record
    return out


def _garbage_next_ifd(pixels: np.ndarray) -> bytes:
    import struct

    data = bytearray(encode(pixels, "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    struct.pack_into("<I", data, ifd + 2 + 12 * entries, 0xDEADBEEF)
    return bytes(data)
