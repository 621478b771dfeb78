"""The headline of ``wingmark benchmark``: the issue's targets as ratios of figures of one run, and
sentences computed from them."""

# ruff: noqa: E501  (report text and log lines read better unwrapped)
from __future__ import annotations

from typing import Any

__all__ = ["MAIN", "headline", "reading"]

MAIN = "512"  # the main image's label (runs of reports from before the HD frame carry no image)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as ratios of figures of this run."""
    bare = report["bare"]
    best = bare["best_cascade"]
    runs = [r for r in report["service"]["runs"] if r.get("image", MAIN) == MAIN]

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
    if "inprocess" in report:
        out["images"] = {label: _per_image(report, label) for label in report["images"]}
        out["targets"] |= _issue24_targets(out["images"])
    return out


def _per_image(report: dict[str, Any], label: str) -> dict[str, Any]:
    """One image's figures: the service (int8 default and float, client boxes) against the in-process
    end-to-end loop and the bare cascade of the model it runs; crops; peers end to end."""
    runs = [r for r in report["service"]["runs"] if r.get("image", MAIN) == label and r["mode"] == "client"]
    c_max = max(r["concurrency"] for r in runs)
    default = [r for r in runs if r["config"] == "default"]
    sat = max(default, key=lambda r: r["faces_per_s"]["median"])
    top = next(r for r in default if r["concurrency"] == c_max)
    flt = next((r for r in runs if r["config"] == "float" and r["concurrency"] == c_max), None)
    ip = report["inprocess"][label]
    e2e = ip["e2e"]["faces_per_s"]["median"]
    bare = ip["bare_cascade"]["faces_per_s"]["median"]
    svc = sat["faces_per_s"]["median"]
    peers = {k: p["faces_per_s"]["median"] if p.get("faces_per_s") else None for k, p in ip["peers"].items()}
    return {
        "service_faces_per_s": svc,
        "service_concurrency": sat["concurrency"],
        "e2e_faces_per_s": e2e,
        "e2e_best": ip["e2e"]["best"],
        "bare_cascade_faces_per_s": bare,
        "service_over_e2e": round(svc / e2e, 3),
        "service_over_bare": round(svc / bare, 3),
        "service_over_bare_adjacent": round(top["faces_per_s"]["median"] / top["bare_cascade_adjacent"][1], 3)
        if top.get("bare_cascade_adjacent")
        else None,
        "float_service_faces_per_s": flt["faces_per_s"]["median"] if flt else None,
        "int8_over_float_cmax": round(top["faces_per_s"]["median"] / flt["faces_per_s"]["median"], 2)
        if flt
        else None,
        "crops_max_ms": ip["crops"]["max_stage_inputs_ms"],
        "decode_reduction": ip["crops"].get("reduction"),
        "crop_backend": ip["crops"]["backend"],
        "peers_faces_per_s": peers,
    }


def _issue24_targets(images: dict[str, dict[str, Any]]) -> dict[str, bool]:
    out = {f"service >= 0.8x in-process e2e ({k})": v["service_over_e2e"] >= 0.8 for k, v in images.items()}
    if "hd" in images:
        out["service >= 0.6x bare cascade (hd)"] = images["hd"]["service_over_bare"] >= 0.6
    out["crops <= 0.3 ms per face per stage"] = max(v["crops_max_ms"] for v in images.values()) <= 0.3
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
    out += [_budget(report, label) for label in h.get("images", {}) if label != MAIN]
    return [line for line in out if line]


def _budget(report: dict[str, Any], label: str) -> str:
    """What the service's work besides inference may cost per request (one face) for 0.6x the bare
    cascade on these cores, against what decoding alone costs it (its own histogram at c=1)."""
    v = report["headline"]["images"][label]
    cores = report["machine"]["cores"]
    one = next(
        (
            r
            for r in report["service"]["runs"]
            if r.get("image", MAIN) == label
            and r["config"] == "default"
            and r["mode"] == "client"
            and r["concurrency"] == 1
        ),
        None,
    )
    decode = (one or {}).get("stage_ms_per_request", {}).get("decode")
    if not decode:
        return ""
    inference = cores * 1000 / v["bare_cascade_faces_per_s"]  # CPU ms per face of the bare cascade
    budget = cores * 1000 / (0.6 * v["bare_cascade_faces_per_s"]) - inference
    return (
        f"The {label} image: the bare cascade costs {inference:.2f} ms of CPU per face on {cores} cores, so 0.6x "
        f"of it leaves {budget:.2f} ms per request (one face) for everything else: decoding, crops, HTTP, batching. "
        f"Decoding alone takes {decode} ms per request in the service at c=1 (its own histogram; the JPEG "
        f"is {report['images'][label]['bytes']} bytes, decoded at 1/{v['decode_reduction']}), and the "
        f"in-process loop, which does only that work, reaches {v['e2e_faces_per_s']} faces/s = "
        f"{v['e2e_faces_per_s'] / v['bare_cascade_faces_per_s']:.2f}x the bare cascade."
    )
