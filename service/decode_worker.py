"""Large images are decoded in a separate, niced process that a request's deadline really stops.

Decoding a 40-megapixel PNG takes Pillow about 0.6 s of one core and cannot be interrupted; in a
decode thread it would hold that thread and a core (competing with every other request's Python
threads) and go on after its request's 504. So the service decodes in its threads only images whose
header says they decode (after any JPEG reduction) to at most ``WINGMARK_DECODE_WORKER_PIXELS``
pixels; larger ones come here (:class:`DecodeWorker`):

- **one lane**: a single child process decodes one image at a time; large images queue behind each
  other and never occupy the decode threads that small images use.
- **niced**: the child runs ``WINGMARK_DECODE_WORKER_NICE`` steps below the server, so that the kernel
  gives good requests' threads the cores first.
- **killed at the deadline**: when the request waiting for a decode is cancelled (its deadline passed
  or its client hung up), the child is killed (SIGKILL), so its work truly stops; the next large
  image starts a new child (about 0.3 s).

The child is ``python -m service.decode_worker FD NICE``: it reads ``(data, options)`` from a Unix
socket (``multiprocessing.connection`` framing), calls ``runtime.decode_image``, and answers the
image's metadata and its pixels in a memory file (``memfd``, its descriptor passed over the socket,
mapped copy-on-write by the parent: no copy through the socket, none in the parent), or the exception
(``ImageDecodeError``, ``ImageTooLargeError``). A child that dies mid-decode (killed, or
crashed by the bytes) makes the decode fail with ``ImageDecodeError``, or with the cancellation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mmap
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.reduction import recvfds, sendfds
from pathlib import Path
from typing import Any

import numpy as np

from runtime import DecodedImage, ImageDecodeError, decode_image

__all__ = ["DecodeWorker"]

log = logging.getLogger("wingmark.service")
_ROOT = Path(__file__).resolve().parent.parent  # the directory holding service/ and runtime/


class DecodeWorker:
    """One child process that decodes images, one at a time, and can be killed mid-decode."""

    def __init__(self, nice: int = 10) -> None:
        self.nice = nice
        self.restarts = 0  # children started after the first (each kill or crash costs one)
        self.decodes = 0  # images decoded
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="wingmark-bigdecode")
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._started = 0
        self._running: int | None = None  # the token of the decode under way
        self._lock = threading.Lock()
        self._tokens = itertools.count()

    @staticmethod
    def supported() -> bool:
        """Linux only (memfd, descriptor passing); elsewhere every image is decoded in the threads."""
        return sys.platform == "linux" and hasattr(os, "memfd_create")

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        """Start the child now (in the lane), so that the first large image does not wait for it."""
        self._lane.submit(self._ensure)

    async def decode(self, data: bytes, **options: Any) -> DecodedImage:
        """``runtime.decode_image(data, **options)`` in the child. Cancelling the awaiting task kills the
        child if this decode is under way, and drops it if it is still queued."""
        token = next(self._tokens)
        future = asyncio.get_running_loop().run_in_executor(self._lane, self._exchange, token, data, options)
        try:
            return await future
        except asyncio.CancelledError:
            if self._running == token:
                self._kill("its request was cancelled (deadline passed or client gone)")
            raise

    def close(self) -> None:
        self._kill(None)
        self._lane.shutdown(wait=False, cancel_futures=True)

    # -- in the lane thread -------------------------------------------------------------------------
    def _ensure(self) -> Connection:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self._conn is not None:
                return self._conn
            ours, theirs = socket.socketpair()
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
            }
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "service.decode_worker", str(theirs.fileno()), str(self.nice)],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            theirs.close()
            self._conn = Connection(ours.detach())
            self.restarts += self._started > 0
            self._started += 1
            return self._conn

    def _exchange(self, token: int, data: bytes, options: dict[str, Any]) -> DecodedImage:
        self._running = token
        try:
            conn = self._ensure()
            conn.send((data, options))
            reply = conn.recv()
            if reply[0] == "error":
                raise reply[1]
            _, shape, meta = reply
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                (fd,) = recvfds(sock, 1)
            try:
                size = int(np.prod(shape))
                shared = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)  # writes stay ours
            finally:
                os.close(fd)
            self.decodes += 1
            return DecodedImage(pixels=np.ndarray(shape, np.uint8, buffer=shared), **meta)
        except (EOFError, OSError) as exc:  # the child died: killed for a cancelled request, or crashed
            self._kill(None)
            raise ImageDecodeError("cannot decode image: the decoder stopped") from exc
        finally:
            self._running = None

    def _kill(self, why: str | None) -> None:
        with self._lock:
            proc, conn = self._proc, self._conn
            self._proc = self._conn = None
        if proc is not None and proc.poll() is None:
            if why:
                log.info("stopped the decode worker (pid %d): %s", proc.pid, why)
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()


def _child(fd_socket: int, nice: int) -> None:
    """The child's loop: decode each request until the parent closes the socket."""
    if nice:
        os.nice(nice)
    conn = Connection(fd_socket)
    while True:
        try:
            data, options = conn.recv()
        except EOFError:
            return
        try:
            image = decode_image(data, **options)
        except Exception as exc:  # the parent re-raises it (ImageDecodeError, ImageTooLargeError)
            conn.send(("error", exc))
            continue
        pixels = image.pixels
        fd = os.memfd_create("wingmark-decode", os.MFD_CLOEXEC)
        os.ftruncate(fd, pixels.nbytes)
        with mmap.mmap(fd, pixels.nbytes) as shared:
            np.ndarray(pixels.shape, np.uint8, buffer=shared)[...] = pixels
        meta = {"width": image.width, "height": image.height, "format": image.format, "mode": image.mode,
                "orientation": image.orientation}  # fmt: skip
        conn.send(("ok", pixels.shape, meta))
        with socket.socket(fileno=os.dup(fd_socket)) as sock:
            sendfds(sock, [fd])
        os.close(fd)


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
