"""The last stage's shifted views (``runtime.cascade.VIEWS``): what each number of views gains, per set and
|yaw| bin, and what it costs in cascade faces/s.

The figures come from ``python -m tools.studies.yaw_errors MODEL --views V ... --out DIR/SET_V.json``, one
file per set and number of views (their labels are each file's own); this study gathers them and times
the cascade through the runtime's facade (``Landmarker.landmarks``: crops, networks, map back; one ONNX
Runtime thread) on up to 64 faces of a set, in alternating rounds, medians:

    python -m tools.studies.views faceapi-ibug68@4.9.0 --figures runs/views --out docs/views_ibug68_4.9.0.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.cascade import VIEW_SHIFT, VIEWS
from tools.studies import write_json

__all__ = ["gather", "main", "speed"]

SPEED_SET = {"kind": "real", "root": "cache/real", "split": "test"}


def speed(
    model: str,
    views: Sequence[int],
    spec: Mapping[str, Any],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 7,
) -> dict[str, Any]:
    """Cascade faces/s of ``model`` at each number of ``views`` and batch size (faces per call), one ONNX
    Runtime thread, on up to 64 faces of ``spec`` from their tight boxes; the views run one after another
    within each round, ``rounds`` rounds, the median and the spread kept."""
    from runtime import Landmarker
    from runtime.backends import create_backend
    from tools.studies.detect_bench_core import cpu_info
    from train.export.gate import resolve_spec, speed_inputs

    mv = resolve_spec(model)
    _, images, boxes = speed_inputs(spec, mv.manifest.scheme)
    backend = create_backend("onnxruntime", mv, device="cpu", max_batch_size=64, threads=1)
    marks = {v: Landmarker(mv, backend, None, views=v) for v in views}
    times: dict[tuple[int, int], list[float]] = {(v, n): [] for v in views for n in batch_sizes}
    for lm in marks.values():
        lm.landmarks(images[:4], boxes[:4])  # warm-up
    for _ in range(rounds):
        for n in batch_sizes:
            for v, lm in marks.items():
                started = time.perf_counter()
                for j in range(0, len(images), n):  # n faces per call: stage 1 n crops, the last n * views
                    lm.landmarks(images[j : j + n], boxes[j : j + n])
                times[(v, n)].append(len(images) / (time.perf_counter() - started))
    backend.close()
    return {
        "model": f"{mv.name}@{mv.version}",
        "faces": len(images),
        "dataset": dict(spec),
        "threads": 1,
        "rounds": rounds,
        "cpu": cpu_info(),  # model and SIMD flags
        "note": "batch N: N faces per call of each stage (the last stage's call has N * views crops). "
        "Through Landmarker.landmarks: crops, networks and mapping back; no decode or detection",
        "cascade_faces_per_s": {str(n): {str(v): _stats(times[(v, n)]) for v in views} for n in batch_sizes},
    }


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}  # fmt: skip


def gather(folder: Path, views: Sequence[int]) -> dict[str, Any]:
    """``folder``'s yaw_errors reports ``SET_V.json`` -> per set: its labels and, per number of views, the
    final stage's NME overall and per |yaw| bin (%)."""
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("*_*.json")):
        name, _, v = path.stem.rpartition("_")
        if not v.isdigit() or int(v) not in views:
            continue
        report = json.loads(path.read_text())
        (run,) = report["runs"]
        if run.get("views", 1) != int(v):
            raise ValueError(f"{path}: ran with {run.get('views', 1)} views, named {v}")
        final = run[f"stage{len(run['stages'])}"]
        entry = out.setdefault(name, {"labels": report["labels"], "data": report["data"], "views": {}})
        entry["client_box"] = run["client_box"]
        entry["views"][v] = {
            "faces": final["all"]["n"],
            "nme_percent": round(100 * final["all"]["nme"], 3),
            "per_yaw_bin": {
                k.removeprefix("|yaw| "): round(100 * r["nme"], 2)
                for k, r in final.items()
                if k.startswith("|yaw|") and r["n"]
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="[STORE_DIR:]NAME@VERSION")
    ap.add_argument("--views", default=",".join(map(str, VIEWS)), help="comma list of VIEWS")
    ap.add_argument("--figures", type=Path, help="a folder of yaw_errors reports SET_V.json")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    views = [int(v) for v in args.views.split(",")]
    if any(v not in VIEWS for v in views):
        ap.error(f"--views: each one of {list(VIEWS)}")
    report: dict[str, Any] = {"views": views, "view_shift": VIEW_SHIFT}
    if args.figures is not None:
        report["sets"] = gather(args.figures, views)
    report["speed"] = speed(args.model, views, SPEED_SET, rounds=args.rounds)
    write_json(report, args.out)
    print(json.dumps(report["speed"]["cascade_faces_per_s"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
