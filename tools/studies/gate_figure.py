"""Turned synthetic test faces drawn by two model versions side by side (docs/img/gate_turned_renders.png).

The faces of the synthetic test set (exact labels, jaw on the visible outline) at |yaw| >= ``--min-yaw`` whose
points the second model changes; three of them, at the 25th, 50th and 75th percentile of the first model's
error; labels green, predictions red; each panel says the inter-ocular NME and the NME over the square root of
the tight box's area (stable in profile, ``tools.studies.yaw_errors``). A JSON beside the PNG holds
the figures:

    python -m tools.studies.gate_figure faceapi-ibug68@4.3.0 faceapi-ibug68@4.4.0 \\
        --out docs/img/gate_turned_renders.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]

SIDE = 384  # px of a panel


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, ImageDraw

    from model_store.geometry import tight_box
    from model_store.schemes import get_scheme
    from runtime import Landmarker
    from runtime.backends import create_backend
    from train.data.synthetic import SyntheticFaces
    from train.export.gate import resolve_spec
    from train.metrics import nme_per_sample

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs=2, help="two [STORE_DIR:]NAME@VERSION, drawn left and right")
    ap.add_argument("--min-yaw", type=float, default=60.0)
    ap.add_argument("--num", type=int, default=500, help="synthetic faces (default: the configs' test set)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument(
        "--uniform-yaw", action="store_true", help="yaw uniform in +-90 degrees (default: the test set's)"
    )
    ap.add_argument("--cache-dir", default="cache/synthetic")
    ap.add_argument("--out", type=Path, required=True, help="the PNG (and a .json beside it)")
    args = ap.parse_args(argv)
    spec: dict[str, Any] = {"kind": "synthetic", "num": args.num, "seed": args.seed, "image_size": 256,
                            "cache_dir": args.cache_dir, "jaw": "contour"}  # fmt: skip
    if args.uniform_yaw:
        spec["pose"] = {"yaw_tail": 1.0, "yaw_max": 90.0}
    faces = SyntheticFaces.from_spec(spec, "ibug68")
    samples = [s for s in (faces[i] for i in range(len(faces))) if abs(s.meta["yaw"]) >= args.min_yaw]
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    boxes = tight_box(gt)
    inter_ocular = np.asarray(get_scheme("ibug68").normaliser_distance(gt, boxes), dtype=np.float64)
    box_side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    preds: list[np.ndarray] = []
    for model_spec in args.models:
        model = resolve_spec(model_spec)
        with Landmarker(model, create_backend("onnxruntime", model, device="cpu")) as landmarker:
            preds.append(landmarker.landmarks([s.image for s in samples], boxes)[-1])
    errors = [nme_per_sample(p, gt, inter_ocular) for p in preds]
    box_errors = [np.linalg.norm(p - gt, axis=2).mean(axis=1) / box_side for p in preds]
    changed = np.nonzero(np.abs(preds[1] - preds[0]).max(axis=(1, 2)) > 0)[0]
    if len(changed) == 0:
        raise SystemExit("the second model changes none of these faces")
    order = changed[np.argsort(errors[0][changed])]
    picks = [int(order[int(q * (len(order) - 1))]) for q in (0.25, 0.5, 0.75)]
    sheet = Image.new("RGB", (2 * SIDE, SIDE * len(picks)))
    for r, k in enumerate(picks):
        for c, name in enumerate(args.models):
            panel = (
                Image.fromarray(samples[k].image)
                .convert("RGB")
                .resize((SIDE, SIDE), Image.Resampling.BICUBIC)
            )
            draw, f = ImageDraw.Draw(panel), SIDE / samples[k].image.shape[1]
            for pts, colour, rad in ((gt[k], (40, 220, 40), 2.0), (preds[c][k], (255, 50, 50), 2.5)):
                for x, y in pts * f:
                    draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=colour)
            draw.rectangle([0, 0, SIDE, 22], fill=(0, 0, 0))
            text = (f"{name}  yaw {samples[k].meta['yaw']:.0f}  NME {errors[c][k] * 100:.1f} %  "
                    f"box-NME {box_errors[c][k] * 100:.1f} %")  # fmt: skip
            draw.text((6, 5), text, fill=(255, 255, 255))
            sheet.paste(panel, (SIDE * c, SIDE * r))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    report: dict[str, Any] = {
        "data": spec, "labels": "exact (renderer), jaw on the visible outline", "min_abs_yaw": args.min_yaw,
        "faces": len(samples), "changed_by_second": len(changed),
        "nme": {m: float(e.mean()) for m, e in zip(args.models, errors, strict=True)},
        "nme_box": {m: float(e.mean()) for m, e in zip(args.models, box_errors, strict=True)},
        "drawn": [{"yaw": float(samples[k].meta["yaw"]),
                   **{m: float(e[k]) for m, e in zip(args.models, errors, strict=True)}} for k in picks],
    }  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("faces", "changed_by_second", "nme", "nme_box")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
