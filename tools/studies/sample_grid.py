"""Sample grids, pose histograms and a speed measurement of the synthetic face generator.

    python -m tools.studies.sample_grid --out docs/img            # the figures in docs/synthetic.md
    python -m tools.studies.sample_grid --real-skin cache/real    # only synthetic_real_skin.jpg

Writes ``synthetic_faces.png`` (plain samples), ``synthetic_ibug68.png`` and ``synthetic_aflw19.png``
(landmarks drawn, one colour per facial part), ``synthetic_pdb.png`` (yaw and first-PC histograms
before and after PDB) and ``synthetic_stats.json`` (render time per face, pose statistics, and the
share of near-frontal faces that dlib's HOG face detector finds). With ``--real-skin ROOT`` it
writes only ``synthetic_real_skin.jpg``: the same faces with procedural skin (top row) and with real
cheek-skin patches from the real-face cache at ROOT (bottom row, :mod:`train.data.skin`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from train.data.pdb import pdb_indices, pose_histogram, pose_projection
from train.data.synthetic import PoseDistribution, SyntheticFaces

__all__ = ["draw_points", "grid", "main"]

# One colour per part of the 68-point mark-up (jaw, brows, nose, eyes, mouth).
_PARTS_68 = [(0, 17), (17, 27), (27, 36), (36, 48), (48, 68)]
_PARTS_19 = [(18, 19), (0, 6), (12, 15), (6, 12), (15, 18)]  # chin, brows, nose, eyes, mouth
_COLOURS = [(255, 210, 0), (0, 230, 255), (255, 80, 80), (80, 255, 80), (255, 80, 255)]


def draw_points(image: np.ndarray, points: np.ndarray, scheme: str, radius: float = 1.6) -> Image.Image:
    """The image with its landmarks drawn as dots (points [K, 2] in the model_store convention)."""
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    parts = _PARTS_68 if scheme == "ibug68" else _PARTS_19
    for (a, b), col in zip(parts, _COLOURS, strict=True):
        for x, y in points[a:b]:
            cx, cy = float(x) - 0.5, float(y) - 0.5  # Pillow draws with pixel centres at integers
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=col)
    return img


def grid(tiles: list[Image.Image], cols: int) -> Image.Image:
    """Tiles of equal size in rows of ``cols``."""
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    out = Image.new("RGB", (w * cols, h * rows), (255, 255, 255))
    for i, t in enumerate(tiles):
        out.paste(t, ((i % cols) * w, (i // cols) * h))
    return out


def _pdb_figure(path: Path, seed: int) -> dict[str, float | None]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = SyntheticFaces("ibug68", num=3000, seed=seed, image_size=256)
    shapes, yaw = ds.shapes(), ds.poses()[:, 0]
    proj = pose_projection(shapes)
    bins, counts = pose_histogram(proj, 9)
    idx = pdb_indices(shapes, 9, np.random.default_rng(seed))
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ax[0].hist(yaw, bins=36, range=(-90, 90), color="#4477aa")
    ax[0].set(title="default PoseDistribution: yaw", xlabel="yaw (degrees)", ylabel="faces")
    ax[1].scatter(yaw, proj, s=3, alpha=0.4, color="#4477aa")
    corr = float(np.corrcoef(proj, yaw)[0, 1])
    ax[1].set(
        title=f"first principal component vs yaw (r = {corr:.3f})", xlabel="yaw (degrees)", ylabel="PC 1"
    )
    after = np.bincount(bins[idx], minlength=9)
    x = np.arange(9)
    ax[2].bar(x - 0.2, counts, width=0.4, label=f"before ({len(shapes)})", color="#4477aa")
    ax[2].bar(x + 0.2, after, width=0.4, label=f"after PDB ({len(idx)})", color="#ee6677")
    ax[2].set(title="PC-1 histogram, 9 bins", xlabel="bin", ylabel="samples")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    yaw_abs = np.abs(yaw)
    return {
        "pc1_yaw_correlation": corr,
        "fraction_abs_yaw_below_30": float((yaw_abs < 30).mean()),
        "fraction_abs_yaw_above_60": float((yaw_abs > 60).mean()),
        "pdb_size_before": len(shapes),
        "pdb_size_after": len(idx),
    }


def _dlib_detection_rate(n: int, seed: int) -> float | None:
    """Fraction of near-frontal, unoccluded synthetic faces that dlib's HOG face detector finds with
    a box overlapping the landmarks' box (IoU > 0.3): a rough, objective proxy of realism."""
    try:
        import dlib
    except ImportError:
        return None
    from model_store.geometry import tight_box
    from runtime.detectors import box_from_dlib_rect, box_iou
    from train.data.render import RenderOptions

    detector = dlib.get_frontal_face_detector()
    opts = RenderOptions(occlusion_prob=0.0, glasses_prob=0.0)
    ds = SyntheticFaces("ibug68", n, seed, image_size=256, pose=PoseDistribution.frontal(), options=opts)
    found = 0
    for sample in ds:
        boxes = [box_from_dlib_rect(r) for r in detector(sample.image, 0)]
        if boxes and box_iou(tight_box(sample.points), np.asarray(boxes)).max() > 0.3:
            found += 1
    return found / n


def _speed(size: int, n: int, seed: int) -> float:
    """Median CPU time (ms) per rendered face, one process, one thread."""
    ds = SyntheticFaces("ibug68", num=n, seed=seed, image_size=size)
    ds[0]  # builds the head model and the noise banks
    times = []
    for i in range(1, n):
        t = time.process_time()
        ds[i]
        times.append(time.process_time() - t)
    return float(np.median(times) * 1e3)


def real_skin_figure(path: Path, root: Path, seed: int, n: int = 6) -> None:
    """The same ``n`` faces with procedural skin (top row) and real skin patches (bottom row)."""
    from train.data.skin import load_skin_bank

    plain = SyntheticFaces("ibug68", num=n, seed=seed, image_size=224)
    real = SyntheticFaces("ibug68", num=n, seed=seed, image_size=224, skin=load_skin_bank(root))
    grid([Image.fromarray(s.image) for s in [*plain, *real]], cols=n).save(path, quality=88)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--size", type=int, default=160, help="tile size in pixels")
    parser.add_argument("--real-skin", type=Path, default=None, help="real-face cache: only that figure")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.real_skin is not None:
        real_skin_figure(out / "synthetic_real_skin.jpg", args.real_skin, args.seed)
        return 0

    plain = SyntheticFaces("ibug68", num=12, seed=args.seed, image_size=224)
    grid([Image.fromarray(s.image) for s in plain], cols=6).save(out / "synthetic_faces.png")
    # Landmark grids over a spread of yaw (a uniform pose distribution shows the profiles too).
    wide = PoseDistribution.uniform_yaw()
    for scheme in ("ibug68", "aflw19"):
        ds = SyntheticFaces(scheme, num=16, seed=args.seed + 1, image_size=args.size, pose=wide)
        samples = sorted(ds, key=lambda s: s.meta["yaw"])
        tiles = [draw_points(s.image, s.points, scheme) for s in samples]
        grid(tiles, cols=8).save(out / f"synthetic_{scheme}.png")
    stats = _pdb_figure(out / "synthetic_pdb.png", args.seed)
    stats |= {f"render_ms_{s}": round(_speed(s, 41, args.seed), 2) for s in (128, 256)}
    stats["dlib_hog_detection_rate_frontal"] = _dlib_detection_rate(300, args.seed)
    (out / "synthetic_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
