"""tools.benchmark.summary: the headline ratios computed from a hand-made report."""

from __future__ import annotations

from typing import Any

from tools.benchmark.summary import _budget, headline


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


def test_issue_24_targets_per_image_from_the_service_the_inprocess_loop_and_the_bare_cascade() -> None:
    def run(config: str, c: int, fps: float, image: str, adjacent: float | None = None) -> dict[str, Any]:
        r: dict[str, Any] = {"config": config, "mode": "client", "concurrency": c, "image": image}
        r["faces_per_s"] = {"median": fps}
        return r | ({"bare_cascade_adjacent": [adjacent - 10, adjacent]} if adjacent else {})

    def image(e2e: float, bare: float, crops: tuple[float, float]) -> dict[str, Any]:
        return {
            "e2e": {"faces_per_s": {"median": e2e}, "best": "batch_32"},
            "bare_cascade": {"faces_per_s": {"median": bare}},
            "crops": {"backend": "opencv", "max_stage_inputs_ms": max(crops), "reduction": 2},
            "peers": {"dlib_e2e": {"faces_per_s": {"median": 40.0}}, "mediapipe_e2e": {"available": False}},
        }

    best = {"batch": 32, "threads": 2, "spinning": False, "faces_per_s": {"median": 300.0}}
    report: dict[str, Any] = {
        "machine": {"cores": 2},
        "bare": {
            "best_cascade": {**best, "pct_of_peak": {"median": 70.0}},
            "rows": [{"what": "cascade", "threads": 1, "faces_per_s": {"median": 110.0}}],
        },
        "images": {"512": {"bytes": 60000}, "hd": {"bytes": 450000}},
        "inprocess": {"512": image(200.0, 600.0, (0.1, 0.25)), "hd": image(100.0, 500.0, (0.1, 0.31))},
        "service": {
            "runs": [
                run("default", 1, 90.0, "512"),
                run("default", 32, 170.0, "512", adjacent=500.0),
                run("float", 32, 100.0, "512"),
                run("default", 1, 50.0, "hd") | {"stage_ms_per_request": {"decode": 4.5}},
                run("default", 8, 95.0, "hd"),
                run("default", 32, 80.0, "hd"),
                run("float", 32, 64.0, "hd"),
            ]
        },
        "peers": {"dlib": {"available": False}},
    }
    h = headline(report)
    main, hd = h["images"]["512"], h["images"]["hd"]
    assert h["service_saturation_faces_per_s"] == 170.0  # the main image's runs only
    assert main["service_over_e2e"] == 0.85 and main["int8_over_float_cmax"] == 1.7
    assert main["service_over_bare_adjacent"] == 0.34
    assert hd["service_faces_per_s"] == 95.0 and hd["service_concurrency"] == 8  # saturation: the best c
    assert hd["service_over_e2e"] == 0.95 and hd["service_over_bare"] == 0.19
    assert hd["int8_over_float_cmax"] == 1.25 and hd["peers_faces_per_s"]["mediapipe_e2e"] is None
    t = h["targets"]
    assert t["service >= 0.8x in-process e2e (512)"] and t["service >= 0.8x in-process e2e (hd)"]
    assert not t["service >= 0.6x bare cascade (hd)"]
    assert not t["crops <= 0.3 ms per face per stage"]  # the HD frame's 0.31 ms
    report["headline"] = h
    sentence = _budget(report, "hd")  # 2 cores: 4 ms of CPU a face; 0.6x leaves 2000 / 300 - 4 ms
    assert "4.00 ms of CPU per face" in sentence and "leaves 2.67 ms per request" in sentence
    assert "4.5 ms per request" in sentence and "decoded at 1/2" in sentence and "0.20x" in sentence
