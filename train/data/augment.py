"""Face crops for training and evaluation, with augmentation applied to image and points together.

One 2x3 similarity ``M`` (image -> crop) carries everything geometric: the crop rule from the face
box (or, for a cascade's second stage, from stage-1 points), then a random rotation, translation and
scale about the crop centre, then an optional horizontal mirror. The crop is
``model_store.crop.crop(image, M)`` (the uint8 crop the service cuts) and the points are
``M @ points`` (re-ordered by the scheme's flip permutation after a mirror), so pixels and landmarks
cannot drift apart. Photometric jitter, blur and occlusion then act on the crop
only (Feng et al., CVPR 2018, Sec. 5: rotation, bounding-box perturbation, flip, and occlusion).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from model_store.cascade import stage_matrices
from model_store.crop import crop as cut
from model_store.geometry import CropRule, apply_affine
from model_store.schemes import Scheme
from train.data.types import Sample

__all__ = ["AugmentConfig", "augment_matrix", "make_crop", "make_crop_flip", "photometric"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (each draw is uniform in its range).

    rotation_deg: +- in-plane rotation; translate: +- shift of the crop centre as a fraction of the
    face box side; scale: zoom range of the face box (1.1 = the face 10% larger in the crop);
    flip_prob: horizontal mirror; photometric: brightness, contrast, saturation, per-channel gain and
    gamma; blur_prob: Gaussian blur (sigma up to ``blur_sigma`` crop pixels at 128); occlusion_prob: a
    random rectangle of noise or flat colour over 5-25% of the crop.
    """

    rotation_deg: float = 30.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    flip_prob: float = 0.5
    photometric: bool = True
    blur_prob: float = 0.2
    occlusion_prob: float = 0.2
    brightness: float = 32.0
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)
    channel_gain: float = 0.08
    gamma: tuple[float, float] = (0.8, 1.25)
    blur_sigma: float = 2.0


def _to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])


def augment_matrix(
    base: np.ndarray, size: int, rule: CropRule, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, bool]:
    """Perturb an image -> crop similarity. Returns ([2, 3] matrix, flipped).

    The perturbation acts in crop coordinates about the crop centre: zoom s, rotation a, shift t
    (t in units of the face box side, which spans size / rule.scale crop pixels), then the mirror
    x -> size - x with probability ``cfg.flip_prob``.
    """
    c = size / 2.0
    angle = math.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    zoom = rng.uniform(*cfg.scale)
    shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * size / rule.scale
    co, si = math.cos(angle) * zoom, math.sin(angle) * zoom
    pert = np.array([[co, -si, 0.0], [si, co, 0.0], [0.0, 0.0, 1.0]])
    pert[:2, 2] = np.array([c, c]) + shift - pert[:2, :2] @ np.array([c, c])
    m = pert @ _to3(base)
    flipped = bool(rng.random() < cfg.flip_prob)
    if flipped:
        m = np.array([[-1.0, 0.0, float(size)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m[:2], flipped


def photometric(crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour jitter of a [S, S, 3] float32 0..255 RGB crop (returns a new array)."""
    x = crop.astype(np.float32) / 255.0
    x = np.clip(x, 0.0, 1.0) ** np.float32(rng.uniform(*cfg.gamma))
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(rng.uniform(*cfg.saturation))
    mean = x.mean()
    x = mean + (x - mean) * np.float32(rng.uniform(*cfg.contrast))
    gain = (1.0 + rng.uniform(-cfg.channel_gain, cfg.channel_gain, size=3)).astype(np.float32)
    x = x * gain * 255.0 + np.float32(rng.uniform(-cfg.brightness, cfg.brightness))
    return np.asarray(np.clip(x, 0.0, 255.0), dtype=np.float32)


def _blur(crop: np.ndarray, sigma: float) -> np.ndarray:
    img = Image.fromarray(np.clip(crop + 0.5, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(img.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32)


def _occlude(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = crop.shape[0]
    area = rng.uniform(0.05, 0.25) * s * s
    aspect = math.exp(rng.uniform(-0.8, 0.8))
    w = int(np.clip(math.sqrt(area * aspect), 2, s))
    h = int(np.clip(math.sqrt(area / aspect), 2, s))
    x0 = int(rng.integers(0, s - w + 1))
    y0 = int(rng.integers(0, s - h + 1))
    out = crop.copy()
    if rng.random() < 0.5:
        out[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3).astype(np.float32)
    else:
        out[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=(h, w, 3)).astype(np.float32)
    return out


def make_crop(
    sample: Sample,
    scheme: Scheme,
    size: int,
    rule: CropRule,
    rng: np.random.Generator | None,
    cfg: AugmentConfig | None,
    *,
    init_points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A square crop of a sample and its landmarks in crop pixels.

    Args:
        sample: image [H, W, 3] uint8 and points [K, 2] in ``scheme``.
        size: crop side S.
        rule: crop rule applied to ``sample.box`` (or to the tight box of ``init_points``).
        rng, cfg: augmentation; if either is None the crop is the deterministic evaluation crop.
        init_points: [K, 2] image-pixel points (stage-1 prediction) to re-align from (cascade stage 2).
    Returns:
        (crop [S, S, 3] float32 0..255 RGB, points [K, 2] float32 in crop pixels).
    """
    crop, pts, _ = make_crop_flip(sample, scheme, size, rule, rng, cfg, init_points=init_points)
    return crop, pts


def make_crop_flip(
    sample: Sample,
    scheme: Scheme,
    size: int,
    rule: CropRule,
    rng: np.random.Generator | None,
    cfg: AugmentConfig | None,
    *,
    init_points: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """:func:`make_crop`, also saying whether the crop was mirrored (points re-ordered by the
    scheme's flip permutation), so that per-point data (e.g. label weights) can follow the points."""
    if sample.scheme != scheme.name:
        raise ValueError(f"sample is in scheme {sample.scheme!r}, asked for {scheme.name!r}")
    pts = np.asarray(sample.points, dtype=np.float64)
    if pts.shape != (scheme.num_points, 2):
        raise ValueError(f"{scheme.name}: expected points [{scheme.num_points}, 2], got {pts.shape}")
    if init_points is None:  # stage 1: the face box; a later stage: re-aligned on the stage-1 points
        m = stage_matrices(0, rule, size, scheme, boxes=np.asarray(sample.box, dtype=np.float64))[0]
    else:
        m = stage_matrices(1, rule, size, scheme, previous=np.asarray(init_points, dtype=np.float64)[None])[0]
    augment = rng is not None and cfg is not None
    flipped = False
    if augment:
        assert rng is not None and cfg is not None
        m, flipped = augment_matrix(m, size, rule, rng, cfg)
    crop = cut(sample.image, m, size).astype(np.float32)  # the crop the service cuts (uint8)
    out_pts = apply_affine(m, pts)
    if flipped:
        out_pts = out_pts[scheme.flip_permutation]
    if augment:
        assert rng is not None and cfg is not None
        if cfg.photometric:
            crop = photometric(crop, rng, cfg)
        if rng.random() < cfg.blur_prob:
            crop = _blur(crop, rng.uniform(0.3, cfg.blur_sigma) * size / 128)
        if rng.random() < cfg.occlusion_prob:
            crop = _occlude(crop, rng)
    return np.asarray(crop, dtype=np.float32), out_pts.astype(np.float32), flipped
