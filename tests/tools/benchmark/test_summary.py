"""tools.benchmark.summary: the headline ratios computed from a hand-made report."""

from __future__ import annotations

from typing import Any

from tools.benchmark.summary import headline


def test_benchmark_headline_ratios_come_from_the_runs_of_the_report() -> None:
    def run(config: str, mode: str, c: int, fps: float) -> dict[str, Any]:
        return {"config": config, "mode": mode, "concurrency": c, "faces_per_s": {"median": fps}}

    best = {"batch": 32, "threads": 2, "spinning": False, "faces_per_s": {"median": 200.0}}
    report: dict[str, Any] = {
        "machine": {"cores": 2},
        "bare": {
            "best_cascade": {**best, "pct_of_peak": {"median": 70.0}},
            "rows": [{"what": "cascade", "threads": 1, "faces_per_s": {"median": 110.0}}],
        },
        "service": {
            "runs": [
                run("default", "client", 1, 60.0),
                run("default", "client", 32, 150.0),
                run("batching_off", "client", 32, 100.0),
                run("timed", "client", 1, 30.0),
                run("timed", "client", 32, 120.0),
                run("h11_asyncio", "client", 32, 125.0),
                run("before", "client", 32, 75.0),
            ]
        },
        "peers": {"dlib": {"available": True, "faces_per_s": {"median": 1100.0}}},
    }
    h = headline(report)
    assert h["service_over_bare_cascade"] == 0.75 and not h["targets"]["service >= 0.8x bare cascade"]
    assert h["batching_gain_at_cmax"] == 1.5
    assert h["greedy_over_timed"] == {"1": 2.0, "32": 1.25}
    assert h["httptools_uvloop_over_h11_asyncio_cmax"] == 1.2
    assert h["after_over_before_client_cmax"] == 2.0
    assert h["wingmark_bare_per_core_over_dlib"] == 0.1
