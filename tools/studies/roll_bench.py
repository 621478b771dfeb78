"""Roll-rule benchmark: the published cascade with stage 2 re-aligned by the eye line ("eyes", the
1.0.0 rule) or by the blended eye-line / brow-to-chin axis ("blend"), on synthetic faces with yaw
uniform in [-90, 90] degrees. Mean NME overall and per |yaw| bin, with the scheme's normaliser
("nme", inter-ocular for ibug68, which grows large in profile as the eyes close up) and with the
square root of the ground-truth tight box area ("nme_box", stable in profile).

    python -m tools.studies.roll_bench --model cnn67-ibug68 --num 300 --out docs/roll_bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from model_store.cascade import CascadeGeometry, StageGeometry
from model_store.geometry import tight_box
from model_store.manifest import read_manifest
from model_store.schemes import get_scheme
from model_store.store import default_root
from runtime.cascade import Cascade
from tools.studies import write_json
from train.metrics import nme_per_sample


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cnn67-ibug68")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--num", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from train.data.synthetic import PoseDistribution, SyntheticFaces
    from train.export.parity import onnx_runtime_session, run_onnx

    root = default_root() / args.model / args.version
    if not root.is_dir():
        root = default_root() / args.model
    manifest = read_manifest(next(root.rglob("manifest.json")))
    mdir = next(root.rglob("manifest.json")).parent
    sessions = [onnx_runtime_session(mdir / s.file, threads=2) for s in manifest.stages]
    scheme = get_scheme(manifest.scheme)
    faces = SyntheticFaces(
        scheme.name, args.num, args.seed, image_size=256, pose=PoseDistribution.uniform_yaw(90.0)
    )
    samples = [faces[i] for i in range(len(faces))]
    yaw = np.abs(np.array([float(s.meta["yaw"]) for s in samples]))
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    norm = scheme.normaliser_distance(gt, np.stack([np.asarray(s.box, np.float64) for s in samples]))
    tb = tight_box(gt)
    box_norm = np.sqrt((tb[:, 2] - tb[:, 0]) * (tb[:, 3] - tb[:, 1]))
    base = [StageGeometry.from_spec(s) for s in manifest.stages]
    report: dict[str, Any] = {
        "model": args.model,
        "version": args.version,
        "n": len(samples),
        "seed": args.seed,
    }
    for rule in ("eyes", "blend"):
        stages = [base[0]] + [
            dataclasses.replace(g, crop_rule=dataclasses.replace(g.crop_rule, roll=rule)) for g in base[1:]
        ]
        cascade = Cascade(CascadeGeometry(stages, scheme), lambda i, x: run_onnx(sessions[i], x))
        preds = cascade.run([s.image for s in samples], tight_box(gt), batch_size=64)
        row: dict[str, Any] = {}
        for k, p in enumerate(preds, start=1):
            for label, nz in (("nme", norm), ("nme_box", box_norm)):
                e = nme_per_sample(p, gt, nz)
                row[f"stage{k}_{label}"] = {
                    "all": round(float(e.mean()), 5),
                    "yaw<=30": round(float(e[yaw <= 30].mean()), 5),
                    "30<yaw<=60": round(float(e[(yaw > 30) & (yaw <= 60)].mean()), 5),
                    "yaw>60": round(float(e[yaw > 60].mean()), 5),
                }
        report[rule] = row
        print(rule, json.dumps(row))
    report["counts"] = {
        "yaw<=30": int((yaw <= 30).sum()),
        "30<yaw<=60": int(((yaw > 30) & (yaw <= 60)).sum()),
        "yaw>60": int((yaw > 60).sum()),
    }
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
