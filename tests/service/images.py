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
    "exif_orientation_jpeg",
    "exif_rotated_jpeg",
    "gradient",
    "mpo",
    "png16_rgb",
    "tiff_ifd_chain",
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


# EXIF field types (TIFF 6.0): their sizes in bytes
EXIF_TYPES = {"BYTE": (1, 1), "ASCII": (2, 1), "SHORT": (3, 2), "LONG": (4, 4), "RATIONAL": (5, 8),
              "FLOAT": (11, 4), "DOUBLE": (12, 8)}  # fmt: skip


def exif_orientation_jpeg(pixels: np.ndarray, kind: str, *values: object) -> bytes:
    """A JPEG whose EXIF orientation tag is written by hand with any EXIF type (Pillow would coerce it
    to SHORT): ``kind`` one of EXIF_TYPES; values ints, floats, (num, den) for RATIONAL, or one str."""
    code, size = EXIF_TYPES[kind]
    if kind == "ASCII":
        payload = str(values[0]).encode() + b"\x00"
    elif kind == "RATIONAL":
        payload = b"".join(struct.pack("<II", *v) for v in values)  # type: ignore[misc]
    else:
        fmt = {"BYTE": "B", "SHORT": "H", "LONG": "I", "FLOAT": "f", "DOUBLE": "d"}[kind]
        payload = struct.pack("<" + fmt * len(values), *values)
    count = len(payload) // size
    data_at = 8 + 2 + 12 + 4  # header, entry count, one entry, next-IFD pointer
    inline = payload.ljust(4, b"\x00") if len(payload) <= 4 else struct.pack("<I", data_at)
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHI", 0x0112, code, count) + inline + struct.pack("<I", 0)
    tiff += payload if len(payload) > 4 else b""
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=b"Exif\x00\x00" + tiff)


def tiff_ifd_chain(count: int, side: int = 16) -> bytes:
    """A ``side`` x ``side`` RGB TIFF whose first IFD is followed by ``count - 1`` more chained IFDs
    (copies of the first: every frame is the same picture). Cheap to make, costly to walk."""
    data = bytearray(encode(np.full((side, side, 3), 90, np.uint8), "TIFF"))
    first = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, first)[0]
    body = bytes(data[first : first + 2 + 12 * entries])
    pointer_at = first + 2 + 12 * entries
    out = bytearray(data)
    for _ in range(count - 1):
        at = len(out)
        struct.pack_into("<I", out, pointer_at, at)
        out += body + b"\x00\x00\x00\x00"
        pointer_at = at + 2 + 12 * entries
    return bytes(out)


def mpo(first: np.ndarray, *more: np.ndarray) -> bytes:
    """A JPEG carrying more pictures after the first (MPO, as phones write depth and gain maps)."""
    return encode(
        Image.fromarray(first),
        "MPO",
        quality=95,
        save_all=True,
        append_images=[Image.fromarray(m) for m in more],
    )
