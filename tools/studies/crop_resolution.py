"""Is the last stage's 112-px crop what limits the cascade? Its NME with the crop's detail taken away.

    python -m tools.studies.crop_resolution faceapi-ibug68@4.9.0 --out docs/crop_resolution_ibug68.json

The cascade runs as served (ONNX Runtime, from the tight box of the labels) up to the last stage; the
last stage's crops are then resampled down to R px and back up to the network's size (bilinear), so the
network sees the same face with the detail of an R-px crop, and the NME is measured per R. If halving
the resolution costs little, a larger input would gain little too: the limit lies elsewhere.
Data: the synthetic validation set (exact labels) and, where the real-face cache exists, its held-out
split (teacher labels).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tools.studies import write_json
from tools.studies.real_bench import default_cache
from tools.studies.yaw_errors import DATA_LABELS, evaluation_sets, labelled_set

__all__ = ["blur_to", "main", "nme_by_resolution"]

RESOLUTIONS = (112, 96, 80, 64, 48)


def blur_to(crops: np.ndarray, size: int) -> np.ndarray:
    """``[N, S, S, 3]`` uint8 crops with the detail of ``size``-px crops: resampled to ``size`` and
    back to S (bilinear); unchanged where ``size >= S``."""
    s = crops.shape[1]
    if size >= s:
        return crops
    bilinear = Image.Resampling.BILINEAR
    low = [Image.fromarray(c).resize((size, size), bilinear) for c in crops]
    return np.stack([np.asarray(c.resize((s, s), bilinear)) for c in low]).reshape(crops.shape)


def nme_by_resolution(
    model_spec: str, spec: Mapping[str, Any], resolutions: Sequence[int] = RESOLUTIONS
) -> dict[str, Any]:
    """Mean and median NME (the scheme's normaliser) of ``model_spec``'s cascade per last-stage
    crop resolution on the dataset ``spec``."""
    from model_store.geometry import tight_box
    from runtime.backends import create_backend
    from runtime.cascade import Cascade
    from train.export.gate import resolve_spec

    model = resolve_spec(model_spec)
    samples, gt, norm, _ = labelled_set(spec, model.manifest.scheme)
    images = [s.image for s in samples]
    backend = create_backend("onnxruntime", model, device="cpu", max_batch_size=64)
    cascade = Cascade.from_manifest(model.manifest, backend.run)
    g, last = cascade.geometry, cascade.num_stages - 1
    # the stages before the last, as served (Cascade.run); the last one's crops made again below
    before = cascade.run(images, tight_box(gt), batch_size=64)[-2] if last else None
    mats = g.matrices(last, boxes=tight_box(gt) if last == 0 else None, previous=before)
    crops = g.crops(last, images, mats)
    rows: dict[str, Any] = {}
    for r in resolutions:
        x = g.to_input(last, blur_to(crops, r))
        out = np.concatenate([backend.run(last, x[j : j + 64]) for j in range(0, len(x), 64)])
        err = np.linalg.norm(g.points(last, out, mats) - gt, axis=-1).mean(axis=1) / norm
        rows[str(r)] = {"nme": float(err.mean()), "nme_median": float(np.median(err))}
    return {"model": f"{model.name}@{model.version}", "input_size": g.stages[last].input_size, "n": len(gt),
            "by_resolution": rows}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="[STORE_DIR:]NAME@VERSION")
    ap.add_argument("--real-root", type=Path, default=default_cache())
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    sets = evaluation_sets(args.real_root, reposed=False)
    report: dict[str, Any] = {"resolutions": list(RESOLUTIONS), "sets": {}}
    for name, spec in sets.items():
        report["sets"][name] = {"data": spec, "labels": DATA_LABELS[spec["kind"]], "models": []}
        for model in args.models:
            row = nme_by_resolution(model, spec)
            report["sets"][name]["models"].append(row)
            cells = " ".join(f"{r}px {v['nme'] * 100:.2f}" for r, v in row["by_resolution"].items())
            print(f"{name} {row['model']} (n={row['n']}): {cells}", flush=True)
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
