"""A one-line progress bar on stderr: done/total, images (or frames) per second, faces per second, ETA.

Redrawn at most ``interval`` seconds apart with a carriage return on a terminal; on a pipe or a
file (logs, CI) one plain line every ``log_interval`` seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        *,
        unit: str = "images",
        enabled: bool = True,
        stream: TextIO | Any = None,
        interval: float = 0.2,
        log_interval: float = 10.0,
        width: int = 24,
    ) -> None:
        self.total = max(0, total)
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.width = width
        self.done = 0
        self.faces = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, n: int = 1, faces: int = 0) -> None:
        self.done += n
        self.faces += faces
        now = time.monotonic()
        if self.enabled and now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        face_rate = self.faces / elapsed
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        return (
            f"[{bar}] {self.done}/{self.total} {self.unit} | {rate:.1f} {self.unit}/s | "
            f"{face_rate:.1f} faces/s | {format_duration(elapsed)} elapsed | ETA {format_duration(left)}"
        )

    def _draw(self, *, final: bool) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(final=True)
