"""``make reliability``: the whole reliability suite against real uvicorn processes, with a report.

    python -m tests.reliability.run [--sections bad,schemathesis,overload,faults,soak,hostile,disconnects,odd]
        [--soak-requests N]

Each section starts its own server (``python -m tools.cli serve``, or ``tests.reliability.faulty``
for the overload and fault sections) with the embedded default models, runs, and its result replaces
that section in docs/reliability.json; docs/reliability.md is rewritten from the JSON and the soak's
RSS curve is plotted to docs/img/reliability_soak_rss.png. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import REPO, Server, start_server
from tests.reliability import hostile, report, suite

DOCS = REPO / "docs"
SECTIONS = ("bad", "schemathesis", "overload", "faults", "soak", "hostile", "disconnects", "odd")

# The bad-input server: small limits, so that each limit is reachable with small requests.
BAD_SETTINGS: dict[str, object] = {
    "max_request_bytes": 3_000_000,
    "max_image_pixels": 20_000_000,
    "max_faces": 32,
    "body_timeout_s": 3,
    "log_level": "debug",  # the most the service logs: the log is checked for image bytes
}
OVERLOAD_SETTINGS: dict[str, object] = {"queue_limit": 8, "max_batch_size": 4, "max_queue_delay_ms": 2}


def log(message: str) -> None:
    print(f"[reliability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server(tmp: Path, settings: dict[str, object], *, faulty: bool = False) -> Server:
    """The real service with the embedded default models; WINGMARK_FAULT_* keys go to the faulty backend."""
    module = "tests.reliability.faulty" if faulty else "tools.cli"
    return start_server(tmp, {"model_root": REPO / "model_store" / "models", **settings}, module=module)


def _stopped(srv: Server, result: dict[str, Any]) -> dict[str, Any]:
    code = srv.stop()
    result.update(exit_code=code, clean_exit=code in (0, -15))
    return result


def section_bad(tmp: Path) -> dict[str, Any]:
    srv = server(tmp, BAD_SETTINGS)
    limits = {k: int(v) for k, v in BAD_SETTINGS.items() if isinstance(v, int)}
    result = suite.run_bad_inputs(srv.url, limits, srv.process)
    result["settings"] = {k: str(v) for k, v in BAD_SETTINGS.items()}
    result["image_bytes_in_log"] = suite.log_has_image_bytes(srv.logs())
    _stopped(srv, result)
    log(f"bad inputs: {result['passed']}/{result['count']} as expected, {result['crashes']} crashes")
    return result


def section_schemathesis(tmp: Path, max_examples: int) -> dict[str, Any]:
    srv = server(tmp, BAD_SETTINGS)
    result = suite.run_schemathesis(srv.url, max_examples=max_examples, workdir=tmp)
    result["process_alive"] = srv.process.poll() is None
    _stopped(srv, result)
    log(f"schemathesis: {result['summary']}")
    return result


def section_overload(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, delay in (("real_backend", 0), ("slow_device_20ms_per_batch", 20)):
        srv = server(tmp, {**OVERLOAD_SETTINGS, "fault_delay_ms": delay}, faulty=True)
        result = suite.run_overload(srv.url, queue_limit=8, requests_per_client=15)
        out[label] = _stopped(srv, result)
        log(f"overload ({label}): {result}")
    out["settings"] = {k: str(v) for k, v in OVERLOAD_SETTINGS.items()}
    return out


def section_faults(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("raise", "stall"):
        batch_log = tmp / f"batches-{mode}.jsonl"
        settings: dict[str, object] = {"max_batch_size": 8, "max_queue_delay_ms": 20, "fault_mode": mode,
                                       "fault_stall_s": 2, "fault_log": batch_log}  # fmt: skip
        srv = server(tmp, settings, faulty=True)
        result = suite.run_fault_isolation(srv.url, batch_log, mode=mode)
        out[mode] = _stopped(srv, result)
        log(f"faults ({mode}): {result}")
    return {"modes": out}


def section_soak(tmp: Path, total: int, concurrency: int) -> dict[str, Any]:
    srv = server(tmp, {})

    def progress(state: suite.SoakState, elapsed: float) -> None:
        rss = state.samples[-1]["rss_bytes"] / 2**20
        log(f"soak {state.done}/{total} ({state.done / elapsed:.1f} req/s), RSS {rss:.1f} MiB, "
            f"errors {state.errors}, wrong {state.wrong}")  # fmt: skip

    result = suite.run_soak(srv.url, srv.process.pid, total=total, concurrency=concurrency, progress=progress)
    result["request"] = "96x96 PNG, one client box, default settings and models"
    return _stopped(srv, result)


def section_hostile(tmp: Path) -> dict[str, Any]:
    srv = server(tmp, {})  # the defaults a deployment gets (40-megapixel limit, 32 faces, dlib)
    result = hostile.run_hostile(srv.url, pid=srv.process.pid)
    log(f"hostile: idle p50 {result['idle']['p50_ms']} ms; "
        + "; ".join(f"{k}: p50 x{result[k]['p50_over_idle_p50']}, errors {result[k]['errors']}"
                    for k in ("40mp_32_boxes", "two_40000_ifd_tiffs")))  # fmt: skip
    return _stopped(srv, result)


def section_disconnects(tmp: Path, clients: int) -> dict[str, Any]:
    srv = server(tmp, {"log_level": "info"})
    result = hostile.run_disconnects(srv.url, srv.process.pid, srv.logs, n=clients)
    log(f"disconnects: {result}")
    return _stopped(srv, result)


def section_odd(tmp: Path) -> dict[str, Any]:
    srv = server(tmp, {})
    result = {"images": hostile.run_odd_images(srv.url)}
    log(f"odd images: {result}")
    return _stopped(srv, result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    parser.add_argument("--soak-requests", type=int, default=50_000)
    parser.add_argument("--soak-concurrency", type=int, default=4)
    parser.add_argument("--schemathesis-examples", type=int, default=1000)
    parser.add_argument("--disconnect-clients", type=int, default=200)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    out_json = args.docs / "reliability.json"
    data: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    for name in wanted:
        log(f"section {name}")
        with tempfile.TemporaryDirectory(prefix=f"wingmark-rel-{name}-") as tmp:
            t0 = time.monotonic()
            if name == "bad":
                result = section_bad(Path(tmp))
            elif name == "schemathesis":
                result = section_schemathesis(Path(tmp), args.schemathesis_examples)
            elif name == "overload":
                result = section_overload(Path(tmp))
            elif name == "faults":
                result = section_faults(Path(tmp))
            elif name == "hostile":
                result = section_hostile(Path(tmp))
            elif name == "disconnects":
                result = section_disconnects(Path(tmp), args.disconnect_clients)
            elif name == "odd":
                result = section_odd(Path(tmp))
            else:
                result = section_soak(Path(tmp), args.soak_requests, args.soak_concurrency)
        result["section_seconds"] = round(time.monotonic() - t0, 1)
        result["run_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result["machine"] = (
            f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
        )
        data[name] = result
        args.docs.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(data, indent=2) + "\n")
        report.write(data, args.docs)
    ok = report.verdict(data)
    log(
        f"wrote {out_json} and {args.docs / 'reliability.md'}; "
        + ("all checks passed" if ok else "SOME CHECKS FAILED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
