"""What a batch job reads: input specs -> media files, and video frames (PyAV).

An input spec is one of

- a file: an image (:data:`IMAGE_SUFFIXES`) or a video (:data:`VIDEO_SUFFIXES`);
- a folder: every image and video under it, recursively, in sorted order;
- a glob (``photos/**/*.jpg``; ``**`` recurses);
- a list file (``.txt`` or ``.lst``, or any file named with a leading ``@``: ``@inputs.txt``): one
  spec per line (blank lines and ``#`` comments skipped; relative paths are relative to the list).

A source's name in the output is its path as expanded here (``str(Path)``), so resuming with the
same command from the same folder recognises the inputs already done.
"""

from __future__ import annotations

import glob
import io
import os
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "LIST_SUFFIXES",
    "VIDEO_SUFFIXES",
    "InputError",
    "VideoFrame",
    "expand_inputs",
    "is_video",
    "read_video",
    "video_frame_count",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".ogv", ".ogg", ".mpg", ".mpeg"})
LIST_SUFFIXES = frozenset({".txt", ".lst"})


class InputError(ValueError):
    """An input spec names nothing readable (a missing file, a glob that matches nothing, ...)."""


def is_media(path: str | Path) -> bool:
    suffix = Path(str(path)).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES


def is_video(path: str | Path) -> bool:
    """By the name's suffix (``.mp4``, ``.mov``, ``.ogv``, ...); object-store URIs work too."""
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def _walk(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if is_media(f) and not f.startswith(".")]
    return found


def _expand_one(spec: str, base: Path | None, depth: int) -> list[Path]:
    if depth > 8:
        raise InputError(f"list files nest too deeply at {spec!r}")
    listed = spec.startswith("@")
    text = spec[1:] if listed else spec
    path = Path(text) if base is None or Path(text).is_absolute() else base / text
    if path.is_dir():
        return _walk(path)
    if path.is_file():
        if listed or path.suffix.lower() in LIST_SUFFIXES:
            out: list[Path] = []
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out += _expand_one(line, path.parent, depth + 1)
            return out
        if not is_media(path):
            raise InputError(f"{path}: not an image or video file (by its suffix)")
        return [path]
    if glob.has_magic(str(path)):
        matches = sorted(glob.glob(str(path), recursive=True))
        out = []
        for m in matches:
            p = Path(m)
            out += _walk(p) if p.is_dir() else [p] if is_media(p) else []
        if not out:
            raise InputError(f"{spec!r} matches no image or video")
        return out
    raise InputError(f"{path}: no such file or folder")


def expand_inputs(specs: Sequence[str | Path]) -> list[Path]:
    """Input specs (see the module docstring) -> media files, in order, each once."""
    seen: set[str] = set()
    out: list[Path] = []
    for spec in specs:
        for p in _expand_one(str(spec), None, 0):
            key = str(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


# -- video ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFrame:
    index: int  # 0-based, in decoding order
    time: float  # seconds from the stream's start (presentation time)
    pixels: np.ndarray  # [H, W, 3] uint8 RGB


def _open(source: str | Path | bytes) -> Any:
    import av

    return av.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source))


def video_frame_count(source: str | Path) -> int | None:
    """The stream's frame count from its header (None where the container does not say)."""
    try:
        with _open(source) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.average_rate and stream.time_base:
                return round(float(stream.duration * stream.time_base * stream.average_rate))
    except Exception:
        return None
    return None


_END = object()


def read_video(source: str | Path | bytes, *, prefetch: int = 8) -> Generator[VideoFrame, None, None]:
    """The frames of a video's first video stream as RGB arrays, decoded ahead in a thread.

    ``prefetch`` frames are decoded ahead of the consumer (decoding overlaps the landmarking).
    Errors while decoding (a truncated file) are raised from the iterator where they happen.
    """
    q: Queue[Any] = Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def produce() -> None:
        try:
            with _open(source) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = float(stream.time_base) if stream.time_base else 0.0
                rate = float(stream.average_rate) if stream.average_rate else 25.0
                for i, frame in enumerate(container.decode(stream)):
                    if stop.is_set():
                        return
                    t = float(frame.pts) * tb if frame.pts is not None and tb else i / rate
                    q.put(VideoFrame(i, t, frame.to_ndarray(format="rgb24")))
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)
        finally:
            q.put(_END)

    worker = threading.Thread(target=produce, name="video-decode", daemon=True)
    worker.start()
    try:
        first_time: float | None = None
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if first_time is None:
                first_time = item.time
            yield VideoFrame(item.index, item.time - first_time, item.pixels)
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except Exception:
                worker.join(timeout=0.05)
