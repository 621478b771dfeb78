"""``--draw DIR``: annotated copies of the inputs (boxes and landmarks), images and videos.

A source's drawing mirrors its path under DIR (``photos/a.jpg`` -> ``DIR/photos/a.jpg``; an
absolute path or URI loses its root or scheme); videos are written as H.264 ``.mp4``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

__all__ = ["VideoDrawer", "draw_faces", "draw_image", "draw_path"]

BOX_COLOUR = (0, 200, 255)
POINT_COLOUR = (255, 60, 60)


def draw_path(folder: Path, source: str, suffix: str | None = None) -> Path:
    """Where ``source``'s drawing goes under ``folder``."""
    text = source.split("://", 1)[-1]
    parts = [p for p in PurePosixPath(text.replace("\\", "/")).parts if p not in {"/", "..", "."}]
    rel = Path(*parts) if parts else Path("input")
    return folder / (rel.with_suffix(suffix) if suffix else rel)


def draw_faces(image: Any, landmarks: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> None:
    """Draw boxes and points onto a Pillow image in place."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    r = max(1.5, max(image.size) / 300)
    for box in boxes:
        draw.rectangle([float(v) for v in box], outline=BOX_COLOUR, width=max(1, round(r)))
    for pts in landmarks:
        for x, y in np.asarray(pts, dtype=np.float64):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=POINT_COLOUR)


def draw_image(
    data: bytes, landmarks: Sequence[np.ndarray], boxes: Sequence[np.ndarray], folder: Path, source: str
) -> Path:
    """The (EXIF-upright) image with its faces drawn, saved under ``folder``; returns the path."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    draw_faces(image, landmarks, boxes)
    suffix = Path(source).suffix.lower()
    out = draw_path(folder, source, None if suffix in {".jpg", ".jpeg", ".png"} else ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, quality=90) if suffix in {".jpg", ".jpeg"} else image.save(out)
    return out


class VideoDrawer:
    """Frames with their faces drawn -> an H.264 ``.mp4`` at the source's frame rate."""

    def __init__(self, folder: Path, source: str, media: str | Path | bytes) -> None:
        import av

        self.path = draw_path(folder, source, ".mp4")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rate: Any = 25
        try:
            with av.open(io.BytesIO(media) if isinstance(media, bytes) else str(media)) as src:
                rate = src.streams.video[0].average_rate or 25
        except Exception:  # the reader reports the error; the drawing just has no frames
            pass
        self._av = av
        self._rate = rate
        self._container: Any = None
        self._stream: Any = None

    def add(self, pixels: np.ndarray, landmarks: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> None:
        from PIL import Image

        image = Image.fromarray(pixels)
        draw_faces(image, landmarks, boxes)
        if self._container is None:
            self._container = self._av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=self._rate)
            self._stream.width = pixels.shape[1] // 2 * 2  # H.264 with yuv420p needs even sides
            self._stream.height = pixels.shape[0] // 2 * 2
            self._stream.pix_fmt = "yuv420p"
        arr = np.asarray(image)[: self._stream.height, : self._stream.width]
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
