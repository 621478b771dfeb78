"""A real uvicorn server in a thread of the test process, on a free 127.0.0.1 port (the app built by
``create_app``; the uvicorn options as ``wingmark serve`` passes them), and raw sockets to talk to it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from service.app import create_app
from service.server import uvicorn_options
from service.settings import Settings

__all__ = ["Live", "live_server", "raw_request"]


@dataclass
class Live:
    host: str
    port: int
    server: uvicorn.Server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def connect(self, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock


@contextmanager
def live_server(settings: Settings, **uvicorn_overrides: Any) -> Iterator[Live]:
    """Start uvicorn with ``settings`` (models loaded before it answers), yield, then stop it."""
    options = {**uvicorn_options(settings), **uvicorn_overrides, "host": "127.0.0.1", "port": 0}
    options["log_level"] = "warning"
    config = uvicorn.Config(create_app(settings, load_in_background=False), **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    try:
        yield Live("127.0.0.1", port, server)
    finally:
        server.should_exit = True
        thread.join(30)


def raw_request(
    path: str, body: bytes, *, content_type: str = "image/png", length: int | None = None
) -> bytes:
    """The bytes of a POST with ``body`` (``length``: the Content-Length to declare, default its size)."""
    declared = len(body) if length is None else length
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    return head.encode() + body
