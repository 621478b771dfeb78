"""Image bytes -> RGB uint8 array, safely (runs in a worker thread; Pillow releases the GIL).

- EXIF orientation is applied exactly as ``PIL.ImageOps.exif_transpose`` applies it (a tag value equal
  to one of 2..8, whatever its EXIF type; anything else means upright), so coordinates refer to the
  image as a viewer that uses Pillow displays it, and the reported size is that image's.
- The pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- Work is bounded by the first picture: only the first frame (GIF, WebP, TIFF's first IFD) is read,
  the frame count is never asked for (a TIFF's chained IFDs would all be walked), and a JPEG that
  carries more pictures (MPO: phones' depth and gain maps) is decoded as its first picture.
- JPEGs much larger than needed are decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``); the
  result records the scale so that coordinates can be mapped back to the original pixels.
- Colour and greyscale JPEGs are decoded by simplejpeg (libjpeg-turbo, the ``fast`` extra) where it
  is installed, at the scale Pillow's draft picked: the same pixels as Pillow's libjpeg-turbo gives,
  in about 0.8x the time (docs/quantize_faceapi_4.1.0.md); Pillow everywhere else.
- Greyscale, greyscale+alpha, RGBA, palette, CMYK, 16-bit and 32-bit integer/float images all
  become 8-bit RGB (alpha is dropped). 16-bit images are scaled by their type's range (0..65535);
  32-bit integer and float images by the range their values use (see :func:`value_range`).
"""

from __future__ import annotations

import functools
import importlib
import io
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "JPEG_REDUCTIONS",
    "SUPPORTED_FORMATS",
    "DecodeDeferredError",
    "DecodedImage",
    "ImageDecodeError",
    "ImageTooLargeError",
    "decode_image",
    "jpeg_decoder",
    "jpeg_size",
    "largest_reduction",
    "orientation",
    "value_range",
]

# Pillow format names accepted (others are refused even if Pillow could open them). MPO: a JPEG with
# more pictures after the first (Pillow reads the first on open).
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})

_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that transpose the image
_EXIF_ORIENTATION = 0x0112
# PIL.ImageOps.exif_transpose's table: orientation -> the transposition that displays the image upright
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(ValueError):
    """The bytes are not a readable image of a supported format."""


class ImageTooLargeError(ValueError):
    """The image has more pixels than allowed."""


class DecodeDeferredError(Exception):
    """Not an error in the image: it would decode to more than ``defer_pixels`` pixels, and the caller
    asked to decode such images elsewhere (the service: in a separate process, ``service.decode_worker``).
    Raised after the header checks, before any pixel is decoded."""

    def __init__(self, pixels: int) -> None:
        super().__init__(f"the image decodes to {pixels} pixels")
        self.pixels = pixels


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and how its array relates to the original pixel grid.

    ``pixels`` may be smaller than the original (reduced JPEG decoding): a point (x, y) in array
    coordinates is (x * scale_x, y * scale_y) in original image pixels.
    """

    pixels: np.ndarray  # [H, W, 3] uint8 RGB
    width: int  # original, upright width
    height: int  # original, upright height
    format: str
    mode: str  # Pillow mode of the file before conversion
    orientation: int  # EXIF orientation applied (1: none)

    @property
    def scale_x(self) -> float:
        return self.width / self.pixels.shape[1]

    @property
    def scale_y(self) -> float:
        return self.height / self.pixels.shape[0]


def orientation(im: Image.Image) -> int:
    """The EXIF orientation ``PIL.ImageOps.exif_transpose`` would apply to ``im``: 2..8, else 1.

    Pillow looks the tag's value up in its table, so a RATIONAL 6/1 or FLOAT 6.0 counts as 6 while an
    ASCII "6", a 6.5 or a second value do not; an unreadable EXIF block counts as no orientation.
    """
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
        method = _TRANSPOSE.get(value)
    except Exception:  # a broken EXIF block or an unhashable value: nothing to apply
        return 1
    return next((k for k, m in _TRANSPOSE.items() if m == method), 1)


def value_range(values: np.ndarray, *, unit: bool) -> tuple[float, float]:
    """The range a 32-bit integer or float image's values are read in (it maps to 0..255).

    The smallest of 0..1 (float images only, ``unit``), 0..255 and 0..65535 that holds every finite
    value; anything else (negative values, larger ones) is stretched from its minimum to its maximum.
    """
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if lo >= 0.0:
        for top in (1.0, 255.0, 65535.0)[0 if unit else 1 :]:
            if hi <= top:
                return 0.0, top
    return lo, hi if hi > lo else lo + 1.0


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> [H, W, 3] uint8 RGB."""
    mode = im.mode
    if mode in {"I;16", "I;16L", "I;16B", "I;16N"}:
        a = np.asarray(im).astype(np.uint32)
        grey = (a >> 8).astype(np.uint8)  # 0..65535 -> 0..255
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in {"I", "F"}:
        a = np.asarray(im).astype(np.float64)
        lo, hi = value_range(a, unit=mode == "F")
        scaled = np.nan_to_num((a - lo) / (hi - lo) * 255.0 + 0.5, nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.clip(scaled, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


JPEG_REDUCTIONS = (1, 2, 4, 8)  # the DCT scales libjpeg decodes at (Image.draft)
_TURBO_MODES = frozenset({"RGB", "L"})  # JPEGs simplejpeg decodes to RGB here (CMYK ones go to Pillow)


@functools.cache
def _simplejpeg() -> ModuleType | None:
    try:
        return importlib.import_module("simplejpeg")
    except ImportError:
        return None


def jpeg_decoder() -> str:
    """What decodes colour and greyscale JPEGs here: ``"simplejpeg X.Y.Z"`` or ``"pillow"``."""
    module = _simplejpeg()
    return "pillow" if module is None else f"simplejpeg {getattr(module, '__version__', '?')}"


def _turbo_jpeg(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """The JPEG's RGB pixels ``[H, W, 3]`` at ``size`` (Pillow's draft size, so the same DCT scale)
    through simplejpeg; None where it is not installed, fails, or would decode to another size."""
    module = _simplejpeg()
    if module is None:
        return None
    w, h = size
    try:  # the smallest scale whose output is at least ``size``
        pixels = module.decode_jpeg(data, "RGB", min_width=w, min_height=h)
    except ValueError:  # libjpeg's error or warning (strict): Pillow, which ignores warnings, decides
        return None
    return pixels if pixels.shape == (h, w, 3) else None


def largest_reduction(most: float) -> int:
    """The largest of :data:`JPEG_REDUCTIONS` that is at most ``most`` (1 when ``most`` < 2)."""
    return max(r for r in JPEG_REDUCTIONS if r <= max(1.0, most))


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG (or MPO) from its header, decoding no pixel (before any EXIF
    turn); None for other formats and for bytes Pillow cannot open (:func:`decode_image` says why)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return (int(im.size[0]), int(im.size[1])) if im.format in _JPEG_FORMATS else None
    except Exception:  # hostile bytes: decode_image names the problem
        return None


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_side: int | None = None,
    min_side: int = 1,
    reduce: int | None = None,
    defer_pixels: int | None = None,
    jpeg: Literal["auto", "pillow"] = "auto",
) -> DecodedImage:
    """Decode ``data``.

    Args:
        data: the encoded image.
        max_pixels: refuse images with more pixels than this (checked before decoding).
        min_side: refuse images with a side shorter than this (no face fits; ImageDecodeError).
        max_side: JPEGs whose long side is at least twice this are decoded at the largest
            1/2^k reduction that keeps the long side >= max_side.
        reduce: decode JPEGs at exactly 1/``reduce`` (1, 2, 4 or 8; instead of ``max_side``'s
            rule), e.g. what the faces' crops need (``runtime.Landmarker.decode_reduction``).
        defer_pixels: raise DecodeDeferredError instead of decoding an image that would decode (after
            any JPEG reduction) to more pixels than this.
        jpeg: "auto" decodes colour and greyscale JPEGs with simplejpeg where installed
            (:func:`jpeg_decoder`), "pillow" always with Pillow.
    Raises:
        ImageDecodeError: undecodable, truncated or unsupported bytes.
        ImageTooLargeError: more than ``max_pixels`` pixels.
    """
    if reduce is not None and reduce not in JPEG_REDUCTIONS:
        raise ValueError(f"reduce must be one of {JPEG_REDUCTIONS}, got {reduce}")
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        fmt = im.format or "unknown"
        if fmt not in SUPPORTED_FORMATS:
            raise ImageDecodeError(f"unsupported image format {fmt}")
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageDecodeError(f"image has no pixels ({w}x{h})")
        if min(w, h) < min_side:
            raise ImageDecodeError(f"image is {w}x{h}; each side must be at least {min_side} px")
        if w * h > max_pixels:
            raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
        mode = im.mode
        draft_mode = "RGB" if mode not in {"L", "CMYK"} else mode
        if fmt in _JPEG_FORMATS and reduce is not None:
            if reduce > 1:  # the size asked for is 1/reduce of the original: libjpeg's scale 1/reduce
                im.draft(draft_mode, (max(1, w // reduce), max(1, h // reduce)))
        elif fmt in _JPEG_FORMATS and max_side is not None and max(w, h) >= 2 * max_side:
            k = max_side / max(w, h)
            im.draft(draft_mode, (max(1, int(w * k)), max(1, int(h * k))))
        if defer_pixels is not None and im.size[0] * im.size[1] > defer_pixels:  # draft() set the size
            raise DecodeDeferredError(im.size[0] * im.size[1])
        turn = orientation(im)  # after the deferral: Pillow decodes a whole PNG to look for its EXIF
        # Image.open leaves every format at its first frame; asking n_frames or seeking would walk
        # every frame or IFD (40,000 chained TIFF IFDs: ~10 s), so neither is done.
        turbo = jpeg == "auto" and fmt in _JPEG_FORMATS and mode in _TURBO_MODES
        pixels = _turbo_jpeg(data, im.size) if turbo else None
        if pixels is None:
            im.load()
            if turn != 1:
                im = im.transpose(_TRANSPOSE[turn])
            pixels = _to_rgb(im)
        elif turn != 1:
            pixels = np.asarray(Image.fromarray(pixels).transpose(_TRANSPOSE[turn]))
    except (ImageDecodeError, ImageTooLargeError, DecodeDeferredError):
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, larger limit: name ours, not Pillow's
        raise ImageTooLargeError(f"the image has too many pixels; the limit is {max_pixels}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image") from exc
    except Exception as exc:
        # Pillow's plugins raise anything on hostile bytes (OSError, SyntaxError, TypeError for a TIFF whose
        # next-IFD pointer is garbage, struct.error, ...) and their messages name Pillow's internals: the
        # bytes are the client's problem, and the client gets the gist
        raise ImageDecodeError("cannot decode image: the data is truncated or corrupt") from exc
    width, height = (h, w) if turn in _SWAPS_AXES else (w, h)
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        orientation=turn,
    )
