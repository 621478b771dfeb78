"""How far the re-posing pipeline's carried labels are from the truth, measured where the truth is known.

Real faces re-posed through MediaPipe's mesh (:mod:`train.data.repose`) carry the photo's labels to the new
pose, and on a real photo nothing says where those labels should land. A synthetic face can be rendered at
both poses with exact labels. So, per face: render it near-frontal, mesh it with MediaPipe (the ``mesh3d``
job, as ``wingmark data repose`` does for the real faces), re-pose it to each target yaw with its exact
frontal labels and the renderer's own frontal pose (so the pose solve's error is left out), and compare the
carried labels with the renderer's exact labels of the same face at that yaw (jaw on the visible outline
both ways, as 300-W). The renderer frames each pose itself while the re-posing keeps the photo's window, so
each carried shape is first fitted to the exact one by a scale and a shift (least squares, no rotation);
what is left is the carried shape's error, a lower bound on its error in the image.

    python -m tools.studies.repose_labels --num 100 --yaws 0,15,30,45,60,75 \\
        --out docs/repose_labels_synthetic.json

``--depth-scale`` multiplies MediaPipe's depth before re-posing: whether a deeper or flatter mesh carries the
labels closer to the truth. Faces are rendered without occluders or glasses (MediaPipe must see the face).
Yaw 0 re-poses each face to its own frontal pose: what the carrying costs with no turn. Errors are per face,
mean over the 68 points, divided by the square root of the exact tight box's area (``nme_box``) and by the
outer-eye-corner distance (``nme``, the 68-point NME the models are measured by), per target yaw and per
region; ``systematic_box`` is the part every face shares and ``mean_residual_box`` that offset per point
(x, y as a share of the face box, carried minus exact: a correction table for the pipeline).
``--correct-with REPORT`` subtracts another run's offsets (scaled by each carried shape's own box) before
comparing: whether the offset learnt on some faces corrects others.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import face_size, tight_box
from tools.studies import inter_ocular, write_json
from train.data.real import REGIONS

__all__ = ["carried_error", "fit_scale_shift", "main"]


def fit_scale_shift(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` [K, 2] moved by the scale and shift that bring it closest to ``dst`` [K, 2] (least squares)."""
    s, d = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    sc, dc = s - s.mean(axis=0), d - d.mean(axis=0)
    scale = float((sc * dc).sum() / max((sc * sc).sum(), 1e-12))
    return np.asarray(sc * scale + d.mean(axis=0))


def carried_error(carried: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """One face: the carried 68 points [68, 2] fitted to the exact ones by scale and shift, then their
    mean distance over the box size (sqrt of the exact tight box's area) and over the outer-eye-corner
    distance, overall and per region."""
    e = np.asarray(exact, np.float64)
    residual = fit_scale_shift(carried, e) - e
    dist = np.linalg.norm(residual, axis=1)
    box_size = face_size(e)
    return {
        "residual_box": (residual / box_size).tolist(),
        "nme_box": float(dist.mean() / box_size),
        "nme": float(dist.mean() / inter_ocular(e)),
        "regions_box": {r: float(dist[a:b].mean() / box_size) for r, (a, b) in REGIONS.items()},
    }


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means over faces; ``systematic_box``: the length of the mean residual of each point over the faces,
    averaged over the points (the part of the error every face shares, which a model trained on such
    labels would learn), beside ``nme_box`` (the mean length of the residuals)."""
    residuals = np.asarray([r["residual_box"] for r in rows])  # [F, 68, 2]
    return {
        "n": len(rows),
        "systematic_box": float(np.linalg.norm(residuals.mean(axis=0), axis=1).mean()),
        "mean_residual_box": np.round(residuals.mean(axis=0), 5).tolist(),  # [68, 2]: the shared offset
        "nme_box": float(np.mean([r["nme_box"] for r in rows])),
        "nme_box_median": float(np.median([r["nme_box"] for r in rows])),
        "nme": float(np.mean([r["nme"] for r in rows])),
        "regions_box": {k: float(np.mean([r["regions_box"][k] for r in rows])) for k in REGIONS},
    }


def run(
    num: int,
    seed: int,
    yaws: Sequence[float],
    size: int,
    python: Path,
    depth_scale: float = 1.0,
    correction: Mapping[str, Any] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    from train.data.real import _save_crop
    from train.data.render import RenderOptions, render_face
    from train.data.repose import ReposeOptions, mesh_crops, repose_photo

    plain = RenderOptions(occlusion_prob=0.0, glasses_prob=0.0)
    pick = np.random.default_rng([seed, 999])
    frontal_yaw = pick.uniform(3.0, 12.0, size=num)  # one side: the targets turn the face further
    faces = []
    with tempfile.TemporaryDirectory() as tmp:
        crops: dict[str, tuple[Path, list[float]]] = {}
        for i in range(num):
            face = render_face(
                np.random.default_rng([seed, i]), size, float(frontal_yaw[i]), 0.0, 0.0, plain, jaw="contour"
            )
            box = tight_box(face.points68[None].astype(np.float64))[0].tolist()
            path = Path(tmp) / f"face{i}.png"
            _save_crop(face.image, box, path)
            crops[str(i)] = (path, box)
            faces.append(face)
        _, meshes = mesh_crops(crops, python, Path(tmp) / "work")
    rows: dict[float, list[dict[str, Any]]] = {float(y): [] for y in yaws}
    missed = 0
    for i, face in enumerate(faces):
        if str(i) not in meshes:
            missed += 1
            continue
        mesh = meshes[str(i)]
        mesh[:, 2] *= depth_scale  # MediaPipe's depth, scaled (1: as the re-posing pipeline uses it)
        for yaw in yaws:
            target = float(frontal_yaw[i]) if yaw == 0 else float(yaw)
            out, _ = repose_photo(
                face.image,
                face.points68,
                mesh,
                size,
                target=(target, 0.0),
                photo_pose=(float(frontal_yaw[i]), 0.0, 0.0),
                options=ReposeOptions(jaw="contour"),
            )
            exact = render_face(
                np.random.default_rng([seed, i]),
                size,
                target,
                0.0,
                0.0,
                plain,
                geometry_only=True,
                jaw="contour",
            ).points68
            carried = np.asarray(out.points, np.float64)
            if correction is not None:  # another run's shared offset at this yaw, in this face's box
                carried = carried - np.asarray(correction[f"{yaw:g}"]) * face_size(carried)
            rows[float(yaw)].append(carried_error(carried, exact))
        if (i + 1) % 20 == 0 or i + 1 == num:
            log(f"{i + 1}/{num} faces")
    return {
        "faces": num,
        "seed": seed,
        "size": size,
        "mediapipe_missed": missed,
        "frontal_yaw_range": [3.0, 12.0],
        "depth_scale": depth_scale,
        "corrected": correction is not None,
        "labels": "exact (renderer) at both poses, jaw on the visible outline; carried = re-posed through "
        "MediaPipe's mesh of the frontal render (train.data.repose), fitted by scale and shift",
        "by_target_yaw": {f"{y:g}": _summary(r) for y, r in rows.items() if r},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num", type=int, default=60, help="synthetic faces")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--yaws", default="0,30,45,60,75", help="target yaws in degrees (0: the face's own pose)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--depth-scale", type=float, default=1.0, help="MediaPipe's z times this (1: as used)")
    ap.add_argument("--mp-python", type=Path, default=Path("cache/real/mp-venv/bin/python"))
    ap.add_argument(
        "--correct-with",
        type=Path,
        default=None,
        help="a report of another run (another --seed): subtract its shared offset per point first",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    yaws = [float(y) for y in args.yaws.split(",") if y]
    correction = None
    if args.correct_with is not None:
        table = json.loads(args.correct_with.read_text())["by_target_yaw"]
        correction = {k: v["mean_residual_box"] for k, v in table.items()}
        if missing := [f"{y:g}" for y in yaws if f"{y:g}" not in correction]:
            ap.error(f"{args.correct_with} has no offsets for yaw {', '.join(missing)}")
    report = run(args.num, args.seed, yaws, args.size, args.mp_python, args.depth_scale, correction)
    for yaw, row in report["by_target_yaw"].items():
        regions = " ".join(f"{k} {v * 100:.2f}" for k, v in row["regions_box"].items())
        print(
            f"yaw {yaw:>3}: n={row['n']} nme_box {row['nme_box'] * 100:.2f} % "
            f"(median {row['nme_box_median'] * 100:.2f}, shared {row['systematic_box'] * 100:.2f}) "
            f"nme {row['nme'] * 100:.2f} % | {regions}"
        )
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
