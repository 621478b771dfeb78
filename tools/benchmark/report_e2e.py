"""The parts of ``docs/benchmarks.md`` on the work the service must do (issue 24): its targets, the
service against the in-process end-to-end loop and the bare cascade on each image, INT8 against float,
crops per face and stage, and the peers end to end."""

# ruff: noqa: E501  (report text and table rows read better unwrapped)
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["crop_section", "e2e_section", "target_rows"]

NAMES = {"512": "512x512 face", "hd": "HD frame 1920x1080"}


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _fmt(st: dict[str, float] | None) -> str:
    return "-" if not st else f"{st['min']:.1f} / {st['median']:.1f}"


def _ms(st: dict[str, float] | None) -> str:
    return "-" if not st else f"{st['min']:.3f} / {st['median']:.3f}"


def _name(label: str) -> str:
    return NAMES.get(label, label)


def target_rows(report: dict[str, Any]) -> list[str]:
    """Rows of the targets table for issue 24 (none for reports from before it)."""
    h = report["headline"]
    images: dict[str, dict[str, Any]] = h.get("images", {})
    if not images:
        return []
    t = h["targets"]
    rows = []
    for label, v in images.items():
        rows.append(
            _row(
                [
                    f"service at saturation (client boxes) >= 0.8x the in-process end-to-end loop, {_name(label)}",
                    f"{v['service_over_e2e']}x ({v['service_faces_per_s']} at c={v['service_concurrency']} / {v['e2e_faces_per_s']} faces/s, loop {v['e2e_best'].replace('_', ' ')})",
                    t[f"service >= 0.8x in-process e2e ({label})"],
                ]
            )
        )
    if "hd" in images:
        v = images["hd"]
        adjacent = (
            f"; {v['service_over_bare_adjacent']}x against the bare cascade measured beside each c=32 run"
            if v.get("service_over_bare_adjacent")
            else ""
        )
        rows.append(
            _row(
                [
                    "service at saturation (client boxes) >= 0.6x the bare cascade of the model it runs, HD frame",
                    f"{v['service_over_bare']}x ({v['service_faces_per_s']} / {v['bare_cascade_faces_per_s']} faces/s){adjacent}",
                    t["service >= 0.6x bare cascade (hd)"],
                ]
            )
        )
    worst = max(v["crops_max_ms"] for v in images.values())
    per = "; ".join(
        f"{_name(k)}: "
        + ", ".join(
            f"stage {r['stage']} {r['stage_inputs_ms']['median']:.3f}"
            for r in report["inprocess"][k]["crops"]["stages"]
        )
        for k in images
    )
    rows.append(
        _row(
            [
                "crops <= 0.3 ms per face per stage (matrix, uint8 crop, network input; median)",
                f"at most {worst:.3f} ms ({per} ms; crop backend {next(iter(images.values()))['crop_backend']})",
                t["crops <= 0.3 ms per face per stage"],
            ]
        )
    )
    ratios = "; ".join(
        f"{_name(k)}: int8 {_top(report, k, 'default')} vs float {v['float_service_faces_per_s']} faces/s = {v['int8_over_float_cmax']}x"
        for k, v in images.items()
        if v.get("int8_over_float_cmax")
    )
    if ratios:
        lm = report["inprocess"]["landmarker"]
        rows.append(
            _row(
                [
                    f"the service with INT8 (default here: {lm['model']}) against float, client boxes, top concurrency",
                    ratios,
                    "reported",
                ]
            )
        )
    return rows


def _top(report: dict[str, Any], label: str, config: str) -> float:
    runs = [
        r
        for r in report["service"]["runs"]
        if r.get("image") == label and r["config"] == config and r["mode"] == "client"
    ]
    return max(runs, key=lambda r: r["concurrency"])["faces_per_s"]["median"]


def e2e_section(report: dict[str, Any]) -> list[str]:
    """The service against the work it must do, per image; the peers end to end."""
    if "inprocess" not in report:
        return []
    ip, h = report["inprocess"], report["headline"]
    lm = ip["landmarker"]
    L = [
        "## The service against the work it must do",
        "",
        f"In process, one loop on the same image and client box: `Landmarker.predict` per image (decode at the faces' "
        f"JPEG reduction, box check and calibration, the cascade at batch 1, landmarks in original pixels), and "
        f"{ip['e2e_batch']} images decoded one by one with their faces through the cascade in one call per stage "
        f"(the service's batching without the service). Both run the model and settings `wingmark serve` loads by "
        f"default: {lm['model']} (precision `{lm['precision']}`), ORT threads {lm['threads']} (0: one per core), "
        f"spinning {lm['spinning']}. The bare cascade is that model's stages on inputs made in advance, batch "
        f"{ip['e2e_batch']}. The service: client boxes, its best concurrency; float: WINGMARK_PRECISION=float at the "
        "top concurrency. Peers end to end (their own decode and face detection): dlib HOG (as the service "
        "configures it) + its 68-point predictor on one core; MediaPipe Face Mesh (468 points, static-image mode) in "
        "its own process with its default threads.",
        "",
        _row(
            [
                "image",
                "service (int8) faces/s",
                "service float",
                "in-process, batch 1",
                f"in-process, batch {ip['e2e_batch']}",
                "bare cascade",
                "service / in-process",
                "service / bare",
                "dlib HOG + 68 points",
                "MediaPipe Face Mesh",
            ]
        ),
        _row(["---"] * 10),
    ]
    for label, v in h.get("images", {}).items():
        rows = ip[label]["e2e"]["rows"]
        peers = ip[label]["peers"]
        L.append(
            _row(
                [
                    _name(label),
                    f"{v['service_faces_per_s']} (c={v['service_concurrency']})",
                    v["float_service_faces_per_s"] or "-",
                    _fmt(rows.get("batch_1")),
                    _fmt(rows.get(f"batch_{ip['e2e_batch']}")),
                    _fmt(ip[label]["bare_cascade"]["faces_per_s"]),
                    f"{v['service_over_e2e']}x",
                    f"{v['service_over_bare']}x",
                    _fmt(peers["dlib_e2e"].get("faces_per_s"))
                    if peers["dlib_e2e"].get("faces_per_s")
                    else "missing",
                    _fmt(peers["mediapipe_e2e"].get("faces_per_s"))
                    if peers["mediapipe_e2e"].get("faces_per_s")
                    else "missing",
                ]
            )
        )
    notes = {
        f"{name} ({_name(label)})": p["note"]
        for label in h.get("images", {})
        for name, p in ip[label]["peers"].items()
        if p.get("note")
    }
    L += ["", "In-process and peer figures are min / median over the repeats; the service's, medians."]
    L += ["", "Peers: " + "; ".join(f"{k}: {v}" for k, v in notes.items()) + "."] if notes else []
    return [*L, ""]


def crop_section(report: dict[str, Any]) -> list[str]:
    """Milliseconds per face of each stage's crop, per image."""
    if "inprocess" not in report:
        return []
    images = report["headline"].get("images", {})
    L = [
        "## Crops per face and stage",
        "",
        "`Cascade.stage_inputs` for one face, as the service's crop thread runs it: the stage's crop matrix, the uint8 "
        "crop (`model_store.crop`, the same function in training and evaluation) and the normalised network input; "
        "and the crop call alone with each backend installed here (OpenCV's `warpAffine` from the `fast` extra; the "
        "exact numpy gather it falls back to). On the decoded image (reduced JPEG decoding where the face allows it). "
        "Milliseconds, min / median.",
        "",
        _row(
            ["image", "decoded", "stage", "crop px", "stage_inputs ms", "crop: opencv ms", "crop: numpy ms"]
        ),
        _row(["---"] * 7),
    ]
    for label in images:
        c = report["inprocess"][label]["crops"]
        for r in c["stages"]:
            L.append(
                _row(
                    [
                        _name(label),
                        "x".join(str(v) for v in c["decoded"]),
                        r["stage"],
                        r["size"],
                        _ms(r["stage_inputs_ms"]),
                        _ms(r.get("crop_opencv_ms")),
                        _ms(r.get("crop_numpy_ms")),
                    ]
                )
            )
    return [*L, ""]
