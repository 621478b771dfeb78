"""Real image files for the service tests, written with Pillow (and by hand where Pillow cannot)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = [
    "bomb_png",
    "encode",
    "exif_rotated_jpeg",
    "gradient",
    "png16_rgb",
    "truncated",
]


def gradient(width: int = 96, height: int = 64) -> np.ndarray:
    """[H, W, 3] uint8: R grows with x, G with y, B constant: orientation is easy to check."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 80)], axis=2).round().astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **params: object) -> bytes:
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def exif_rotated_jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``pixels`` as stored, tagged with an EXIF orientation (6: display rotated 90° CW)."""
    im = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png(header: bytes, idat: bytes) -> bytes:
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def png16_rgb(pixels16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write these), [H, W, 3] uint16."""
    h, w, _ = pixels16.shape
    raw = b"".join(b"\x00" + pixels16[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A small file whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # greyscale, 8-bit
    row = b"\x00" + b"\x00" * width
    data = zlib.compress(row * 8)  # only a few rows: the header is what must be refused
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(16, int(len(data) * keep))]
