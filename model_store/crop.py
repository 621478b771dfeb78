"""The one crop of every stage, in training, evaluation and serving: a face cut from the image by one
uint8 affine warp.

``crop(image, m, size)`` samples the crop pixel centres through the image -> crop map ``m`` (bilinear,
image pixel centres at i + 0.5, neighbours outside the image read 0: the convention of
``geometry.warp_affine``) and returns uint8 pixels, never a float copy of the image or of the window
the crop covers. Two backends compute it:

- ``opencv``: ``cv2.warpAffine`` (opencv-python-headless, the ``fast`` extra) on a view of the window
  the crop reads: about 0.03 ms for a 64 px crop and 0.06 ms for a 128 px one on one core of the
  benchmark machine. OpenCV places the samples on a 1/32-pixel grid and blends in fixed point: against
  the exact float crop, half a grey level on average on smooth images (up to a few levels where one
  pixel's neighbours differ by a hundred, e.g. at the image's edge).
- ``numpy``: the exact float32 bilinear gather (:func:`crop_reference`) rounded to uint8, reading the
  4 * S * S neighbours straight from the uint8 image (about 15x slower). Used where OpenCV is absent.

:func:`crop_backend` names the backend in use (OpenCV where importable).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np

from model_store.geometry import invert_affine

__all__ = ["CROP_BACKENDS", "CropBackend", "crop", "crop_backend", "crop_reference"]

CropBackend = Literal["opencv", "numpy"]
CROP_BACKENDS: tuple[CropBackend, ...] = ("opencv", "numpy")
_MARGIN = 2  # px around the sampled area: every bilinear neighbour of a sample lies in the window


@functools.cache
def _cv2() -> Any:
    """OpenCV, or None. Its own thread pool is limited to one thread: the crop runs beside inference."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def crop_backend() -> CropBackend:
    """The backend :func:`crop` uses by default: ``opencv`` where cv2 imports, else ``numpy``."""
    return "opencv" if _cv2() is not None else "numpy"


def crop(
    image: np.ndarray,
    m: np.ndarray,
    size: int,
    *,
    out: np.ndarray | None = None,
    backend: CropBackend | None = None,
) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``image`` through ``m``, as uint8.

    image [H, W, C] (or [H, W]) uint8 (other dtypes are cropped exactly and rounded); m [2, 3]
    image -> crop similarity; ``out`` (optional) a C-contiguous uint8 [S, S, C] (or [S, S]) to fill
    (e.g. one face of a batch's buffer). Returns ``out`` or a new array.
    """
    img = np.asarray(image)
    shape = (size, size, *img.shape[2:])
    if out is None:
        out = np.empty(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
    cv2 = _cv2() if (backend or crop_backend()) == "opencv" else None
    if backend == "opencv" and cv2 is None:
        raise RuntimeError("the opencv crop backend needs opencv-python-headless: pip install wingmark[fast]")
    if cv2 is None or img.dtype != np.uint8:
        np.copyto(out, np.clip(np.rint(crop_reference(img, m, size)), 0, 255), casting="unsafe")
        return out
    # crop -> image, in scalars (a 2x3 map: numpy's per-call overhead would cost more than OpenCV's warp)
    (a, b, tx), (c, d, ty) = np.asarray(m, dtype=np.float64).tolist()
    det = a * d - b * c
    if not (math.isfinite(det) and det != 0.0):
        raise ValueError("crop matrix maps outside finite coordinates")
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx, ity = -(ia * tx + ib * ty), -(ic * tx + id_ * ty)
    if not all(math.isfinite(v) for v in (ia, ib, ic, id_, itx, ity)):
        raise ValueError("crop matrix maps outside finite coordinates")
    h, w = img.shape[:2]
    # the window the samples read: the crop's corners in image pixels, with a margin, inside the image
    xs = (itx, ia * size + itx, ib * size + itx, (ia + ib) * size + itx)
    ys = (ity, ic * size + ity, id_ * size + ity, (ic + id_) * size + ity)
    x0, y0 = max(math.floor(min(xs)) - _MARGIN, 0), max(math.floor(min(ys)) - _MARGIN, 0)
    x1, y1 = min(math.ceil(max(xs)) + _MARGIN, w), min(math.ceil(max(ys)) + _MARGIN, h)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the image
        out.fill(0)
        return out
    window = img[y0:y1, x0:x1]  # a view: OpenCV reads rows with any row stride
    if (
        any(s <= 0 for s in window.strides)
        or window.strides[-1] != 1
        or (window.ndim == 3 and window.strides[1] != window.shape[2])
    ):
        window = np.ascontiguousarray(window)  # e.g. a mirrored view; only the window is copied
    # OpenCV samples crop pixel (u, v) at window index inv @ (u, v, 1): shift ours to centres at i + 0.5
    cm = np.array(
        [
            [ia, ib, itx + 0.5 * (ia + ib) - 0.5 - x0],
            [ic, id_, ity + 0.5 * (ic + id_) - 0.5 - y0],
        ]
    )
    got = cv2.warpAffine(
        window,
        cm,
        (size, size),
        dst=out,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if got is not out:  # OpenCV wrote a new array (it should not: out has its shape and type)
        out[...] = got.reshape(shape)
    return out


def crop_reference(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``warp_affine(image, m, size)`` (bilinear, zero outside), reading only the pixels it samples.

    Same pixel convention, arithmetic and values as ``geometry.warp_affine`` (equal to float32
    rounding): each crop pixel blends its four neighbours in the image, a neighbour outside the image
    reading 0. The neighbours are gathered straight from the image, so the cost follows the crop
    (4 * S * S reads), never the window it covers. image [H, W, 3] (or [H, W]) uint8 or float,
    m [2, 3] image -> crop; returns [S, S, 3] (or [S, S]) float32 (0..255 for uint8 images).
    """
    img = np.asarray(image)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    h, w, channels = img.shape
    inv = invert_affine(m)  # crop -> image
    centres = np.arange(size, dtype=np.float64) + 0.5
    # array-index coordinates (pixel centre at i) of every crop pixel centre: [S, S]
    x = inv[0, 0] * centres[None, :] + inv[0, 1] * centres[:, None] + (inv[0, 2] - 0.5)
    y = inv[1, 0] * centres[None, :] + inv[1, 1] * centres[:, None] + (inv[1, 2] - 0.5)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("crop matrix maps outside finite coordinates")
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0).astype(np.float32).reshape(-1, 1)
    fy = (y - y0).astype(np.float32).reshape(-1, 1)
    xi = np.clip(x0, -2, w + 1).astype(np.int64).reshape(-1)
    yi = np.clip(y0, -2, h + 1).astype(np.int64).reshape(-1)
    # the weight of each neighbour, 0 where it lies outside the image (it reads 0 there)
    wx = ((1 - fx) * ((xi >= 0) & (xi < w))[:, None], fx * ((xi >= -1) & (xi < w - 1))[:, None])
    wy = ((1 - fy) * ((yi >= 0) & (yi < h))[:, None], fy * ((yi >= -1) & (yi < h - 1))[:, None])
    cols = (np.clip(xi, 0, w - 1), np.clip(xi + 1, 0, w - 1))
    rows = (np.clip(yi, 0, h - 1), np.clip(yi + 1, 0, h - 1))
    if img.flags.c_contiguous:  # one flat gather per neighbour
        flat = img.reshape(h * w, channels)

        def pixels(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return np.take(flat, r * w + c, axis=0).astype(np.float32)
    else:

        def pixels(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return img[r, c].astype(np.float32)

    top = pixels(rows[0], cols[0]) * wx[0] + pixels(rows[0], cols[1]) * wx[1]
    bottom = pixels(rows[1], cols[0]) * wx[0] + pixels(rows[1], cols[1]) * wx[1]
    out = (top * wy[0] + bottom * wy[1]).reshape(size, size, channels)
    return out[:, :, 0] if squeeze else out
