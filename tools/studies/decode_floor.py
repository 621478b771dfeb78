"""How fast can this CPU decode the benchmark's HD frame, and what does that allow the service?

The service with client boxes must decode every request's JPEG; the bare cascade decodes nothing. On one
core this study times the HD frame of ``wingmark benchmark`` (``tools.benchmark.images.hd_frame``) decoded
by simplejpeg (libjpeg-turbo) at each DCT scale and by Pillow's draft mode. At 1/8 scale libjpeg-turbo
keeps only each block's DC coefficient, but it must still entropy-decode every coefficient of the file
(a baseline JPEG without restart markers cannot be entered in the middle): that time is the floor of any
decoder that reads the file. From it and the bare cascade's CPU time per face (``--cascade-faces-per-s``
on ``--cores`` cores, e.g. docs/benchmarks.json's figure), the ceiling of "service faces/s / bare
cascade faces/s" for one face a frame is ``cascade / (cascade + floor)``, before any HTTP, crop or
batching cost.

    python -m tools.studies.decode_floor --cascade-faces-per-s 957 --out docs/decode_floor.json
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.studies import write_json

SCALES = (1, 2, 4, 8)


def time_ms(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Min and median milliseconds of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"min": round(min(times), 3), "median": round(statistics.median(times), 3)}


def ratio_ceiling(cascade_ms_per_face: float, decode_ms: float) -> float:
    """The highest service/bare-cascade ratio one face a frame allows when decoding costs ``decode_ms``
    of CPU and the cascade ``cascade_ms_per_face`` (both per face, same cores), all else free."""
    if cascade_ms_per_face <= 0 or decode_ms < 0:
        raise ValueError("cascade time must be > 0 and decode time >= 0")
    return cascade_ms_per_face / (cascade_ms_per_face + decode_ms)


def measure(data: bytes, size: tuple[int, int], repeats: int) -> dict[str, dict[str, float]]:
    """Decode times (ms) of the JPEG ``data`` of ``size`` (w, h): simplejpeg and Pillow at each scale."""
    import simplejpeg
    from PIL import Image

    w, h = size
    rows: dict[str, dict[str, float]] = {}
    for s in SCALES:
        rows[f"simplejpeg 1/{s}"] = time_ms(
            lambda s=s: simplejpeg.decode_jpeg(  # type: ignore[misc]
                data, min_width=w // s, min_height=h // s, fastdct=True, fastupsample=True
            ),
            repeats,
        )

        def pillow(s: int = s) -> None:
            im = Image.open(io.BytesIO(data))
            im.draft("RGB", (w // s, h // s))
            im.load()

        rows[f"pillow draft 1/{s}"] = time_ms(pillow, repeats)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--cascade-faces-per-s", type=float, default=None, help="the bare cascade's faces/s")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the bare cascade used")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)

    from tools.benchmark.images import hd_frame
    from tools.benchmark.measure import machine

    data, pixels, _box, source = hd_frame()
    size = (int(pixels.shape[1]), int(pixels.shape[0]))
    rows = measure(data, size, args.repeats)
    floor = min(r["median"] for r in rows.values())
    report: dict[str, Any] = {
        "image": {"source": source, "bytes": len(data), "size": list(size)},
        "machine": machine(os.cpu_count() or 1),
        "loadavg": list(os.getloadavg()),
        "repeats": args.repeats,
        "decode_ms_one_core": rows,
        "floor_ms": floor,
    }
    if args.cascade_faces_per_s:
        cascade_ms = args.cores * 1e3 / args.cascade_faces_per_s  # CPU ms per face
        report["cascade_cpu_ms_per_face"] = round(cascade_ms, 3)
        report["ratio_ceiling"] = round(ratio_ceiling(cascade_ms, floor), 3)
        # the CPU time per one-face request that 0.6x of the bare cascade leaves for everything but inference
        report["budget_ms_at_0_6x"] = round(cascade_ms * (1 / 0.6 - 1), 3)
        report["cascade_faces_per_s"] = args.cascade_faces_per_s
        report["cascade_cores"] = args.cores
    for name, r in rows.items():
        print(f"{name:>20}: min {r['min']:.2f} ms, median {r['median']:.2f} ms")
    if "ratio_ceiling" in report:
        print(
            f"floor {floor:.2f} ms; cascade {report['cascade_cpu_ms_per_face']:.2f} CPU ms a face -> "
            f"service/bare ceiling {report['ratio_ceiling']:.3f}x"
        )
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
