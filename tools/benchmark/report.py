"""``docs/benchmarks.md``: the markdown page of one ``wingmark benchmark`` run."""

# ruff: noqa: E501  (report text and table rows read better unwrapped)
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.benchmark.report_e2e import crop_section, e2e_section, target_rows
from tools.benchmark.summary import reading

__all__ = ["write_markdown"]


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(st: dict[str, float]) -> str:
    return f"{st['min']:.1f} / {st['median']:.1f}"


def write_markdown(report: dict[str, Any], path: Path, img: str) -> None:
    m, bare, h = report["machine"], report["bare"], report["headline"]
    images = report.get("images", {"512": report["image"]})
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
        *([f"- JPEG decoding: {m['jpeg_decoder']} (runtime.decode)"] if "jpeg_decoder" in m else []),
        *(
            f"- image{'' if len(images) == 1 else f' {label}'}: {im['source']} ({im['bytes']} bytes, "
            f"{im['width']}x{im['height']}); client box {im['box']}"
            for label, im in images.items()
        ),
        f"- model: {report['model']}",
        "",
    ]
    L += ["## Targets (this run)", "", _row(["target", "measured", "met"]), _row(["---"] * 3)]
    L += target_rows(report)
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
                "service at saturation (client boxes) >= 0.8x bare cascade"
                + (
                    f" (issue 11's target, replaced by issue 24's above: the service runs {report['inprocess']['landmarker']['model']}, the bare table {report['model']} at its best batch)"
                    if "inprocess" in report
                    else ""
                ),
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
    L += [""] + e2e_section(report) + crop_section(report) if "inprocess" in report else []
    L += [
        "",
        "## Bare models through ONNX Runtime",
        "",
        "FLOPs counted from the ONNX graphs (tools.perf): "
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
        + (
            "`float` (WINGMARK_PRECISION=float: the float model, where the default picks the int8 variant on CPUs with int8 dot products), "
            if any(r["config"] == "float" for r in report["service"]["runs"])
            else ""
        )
        + "`timed` (WINGMARK_BATCH_POLICY=timed: every batch waits up to the 5 ms queue delay, the policy before; the default is greedy: a batch runs as soon as the device is free), "
        "`h11_asyncio` (uvicorn with pure-Python h11 and asyncio's loop instead of httptools and uvloop), `before` "
        "(the settings before issue 11: timed batching, h11 + asyncio, ORT 1 thread with spinning, 2 pool threads, the whole cascade on the device thread; the faster "
        + ("uint8 crop (OpenCV)" if "inprocess" in report else "Pillow crop")
        + " is in every configuration, so `before` understates the change). "
        "Modes: `client` (the client sends the face box) and `detect` (dlib HOG in the service).",
        "",
        _row(
            [
                *(["image"] if len(images) > 1 else []),
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
        _row(["---"] * (8 + (len(images) > 1))),
    ]
    for r in report["service"]["runs"]:
        lat = r["latency_ms"]
        L.append(
            _row(
                [
                    *([r["image"]] if len(images) > 1 else []),
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
    col = ["image"] if len(images) > 1 else []
    L += [_row([*col, "config", "mode", "c", *keys]), _row(["---"] * (3 + len(col) + len(keys)))]
    for r in report["service"]["runs"]:
        sm = r.get("stage_ms_per_request", {})
        first = [r["image"]] if col else []
        L.append(_row([*first, r["config"], r["mode"], r["concurrency"]] + [sm.get(k, "") for k in keys]))
    for label in images:
        L += _profile_lines(
            report["service"].get("profile" if label == "512" else f"profile_{label}", {}),
            label,
            len(images) > 1,
        )
    L += [""]
    L += _batch_section()
    L += _decode_floor_section()
    path.write_text("\n".join(L) + "\n")


def _profile_lines(p: dict[str, Any], label: str, named: bool) -> list[str]:
    L: list[str] = []
    if p.get("available"):
        L += [
            "",
            f"py-spy, {p['samples']} samples of the service under client-box load at the top concurrency "
            f"{f'on the {label} image ' if named else ''}(all threads, idle waits excluded):",
            "",
            _row(["category", "% of samples"]),
            _row(["---"] * 2),
        ]
        L += [_row([k, v]) for k, v in p["by_category_pct"].items()]
        L += ["", _row(["leaf function", "% of samples"]), _row(["---"] * 2)]
        L += [_row([k.replace("|", "/"), v]) for k, v in p["top_leaves_pct"].items()]
    elif p:
        L += ["", f"Profiler: {p.get('note')}"]
    return L


BATCH_JSON = Path(__file__).resolve().parents[2] / "docs" / "batch_throughput.json"


def _batch_section() -> list[str]:
    """The offline batch job against the bare in-process loop, from the committed
    ``docs/batch_throughput.json`` (``python -m tools.studies.batch_throughput``; not re-measured here)."""
    if not BATCH_JSON.is_file():
        return []
    b = json.loads(BATCH_JSON.read_text())
    ips, cpu = b["median_images_per_second"], b["median_images_per_cpu_second"]
    return [
        "",
        "## wingmark batch against the bare loop",
        "",
        "Not part of this run: written from `python -m tools.studies.batch_throughput` "
        "(`docs/batch_throughput.json`; method and discussion in [batch.md](batch.md)). "
        f"CPU: {b['cpu']}, load average {b['load_average_1min']}; {b['images']} photos; {b['model']}. "
        "Bare loop: decode -> `Landmarker.predict`, one image at a time; batch: `wingmark batch`'s job "
        "(decode and detection threads, faces of several images per network call, Parquet written). Medians:",
        "",
        _row(["", "images/s (wall)", "images per CPU second"]),
        _row(["---"] * 3),
        _row(["bare loop", ips["bare"], cpu["bare"]]),
        _row(["wingmark batch", ips["batch"], cpu["batch"]]),
        _row(
            [
                "batch / bare",
                f"**{b['ratio_batch_to_bare']}x**",
                f"**{b['ratio_batch_to_bare_per_cpu_second']}x**",
            ]
        ),
        "",
    ]


DECODE_JSON = Path(__file__).resolve().parents[2] / "docs" / "decode_floor.json"


def _decode_floor_section() -> list[str]:
    """The HD frame's JPEG decode times and the service/bare-cascade ceiling they leave, from the committed
    ``docs/decode_floor.json`` (``python -m tools.studies.decode_floor``; not re-measured here)."""
    if not DECODE_JSON.is_file():
        return []
    d = json.loads(DECODE_JSON.read_text())
    m = d["machine"]
    L = [
        "",
        "## The HD frame's decode floor",
        "",
        "Not part of this run: written from `python -m tools.studies.decode_floor` (`docs/decode_floor.json`). "
        f"CPU: {m['model_name']}, {m['cores']} cores, flags {', '.join(m['vector_flags'])}; load average "
        f"{round(d['loadavg'][0], 2)}; the benchmark's HD frame ({d['image']['bytes']} bytes, "
        f"{d['image']['size'][0]}x{d['image']['size'][1]}), one core, {d['repeats']} decodes each, ms:",
        "",
        _row(["decoder", "min", "median"]),
        _row(["---"] * 3),
    ]
    L += [_row([k, v["min"], v["median"]]) for k, v in d["decode_ms_one_core"].items()]
    L += [
        "",
        f"At 1/8 scale libjpeg-turbo keeps only each block's DC coefficient but must still entropy-decode the whole "
        f"file (a baseline JPEG without restart markers cannot be entered in the middle): the fastest median, "
        f"**{d['floor_ms']} ms**, is the floor of any decoder that reads the whole file (one that stops after the "
        "last row the crops read saves only the rows below the face).",
    ]
    if "ratio_ceiling" in d:
        L += [
            f"The bare cascade ({d['cascade_faces_per_s']} faces/s on {d['cascade_cores']} cores) costs "
            f"{d['cascade_cpu_ms_per_face']} ms of CPU per face, so with one face a frame the service can reach at "
            f"most {d['cascade_cpu_ms_per_face']} / ({d['cascade_cpu_ms_per_face']} + {d['floor_ms']}) = "
            f"**{d['ratio_ceiling']}x** the bare cascade on this frame, with HTTP, crops and batching free. "
            f"0.6x would leave {d.get('budget_ms_at_0_6x', '?')} ms per request for everything but inference, "
            "decoding included: less than the decode floor, so no decoder reaches it on this CPU.",
        ]
    L += [""]
    return L
