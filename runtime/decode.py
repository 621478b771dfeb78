"""Image bytes -> RGB uint8 array, safely (runs in a worker thread; Pillow releases the GIL).

- EXIF orientation is applied, so coordinates refer to the image as it is displayed.
- The pixel count is checked from the header, before any pixel is decoded (decompression bombs).
- JPEGs much larger than needed are decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``); the
  result records the scale so that coordinates can be mapped back to the original pixels.
- Greyscale, greyscale+alpha, RGBA, palette, CMYK, 16-bit and 32-bit integer/float images all
  become 8-bit RGB (alpha is dropped; 16-bit values are scaled to 8 bits).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "JPEG_REDUCTIONS",
    "SUPPORTED_FORMATS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageTooLargeError",
    "decode_image",
]

# Pillow format names accepted (others are refused even if Pillow could open them).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM"})

_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that transpose the image
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """The bytes are not a readable image of a supported format."""


class ImageTooLargeError(ValueError):
    """The image has more pixels than allowed."""


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


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> [H, W, 3] uint8 RGB."""
    mode = im.mode
    if mode in {"I;16", "I;16L", "I;16B", "I;16N"}:
        a = np.asarray(im).astype(np.uint32)
        grey = (a >> 8).astype(np.uint8)  # 0..65535 -> 0..255
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in {"I", "F"}:
        a = np.asarray(im).astype(np.float64)
        hi = 65535.0 if a.max(initial=0.0) > 255.0 else 255.0
        grey = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8)


JPEG_REDUCTIONS = (1, 2, 4, 8)  # the DCT scales libjpeg decodes at (Image.draft)


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_side: int | None = None,
    min_side: int = 1,
    reduce: int | None = None,
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
        orientation = 1
        try:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
        except Exception:  # a broken EXIF block is ignored, not fatal
            orientation = 1
        mode = im.mode
        draft_mode = "RGB" if mode not in {"L", "CMYK"} else mode
        if fmt == "JPEG" and reduce is not None:
            if reduce > 1:  # the size asked for is 1/reduce of the original: libjpeg's scale 1/reduce
                im.draft(draft_mode, (max(1, w // reduce), max(1, h // reduce)))
        elif fmt == "JPEG" and max_side is not None and max(w, h) >= 2 * max_side:
            k = max_side / max(w, h)
            im.draft(draft_mode, (max(1, int(w * k)), max(1, int(h * k))))
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im) or im
        pixels = _to_rgb(im)
    except (ImageDecodeError, ImageTooLargeError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    width, height = (h, w) if orientation in _SWAPS_AXES else (w, h)
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        orientation=orientation,
    )
