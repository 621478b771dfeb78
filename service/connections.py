"""Connection limits for uvicorn: a request head must arrive in time, or the connection is closed.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``), but
it sets no timer on a new connection, and none once bytes of a next request start to arrive: a client
that connects and sends nothing, or trickles a request head that never ends, holds a connection (and a
file descriptor) for ever. :func:`http_protocol` returns uvicorn's HTTP protocol (httptools or h11)
with one timer added: armed when the connection opens and whenever bytes arrive while no request is
being handled, stopped when a request head is complete. When it fires, the client gets
``408 Request Timeout`` and the connection is closed. (The body has its own limit: the landmarks route
answers 408 past ``WINGMARK_BODY_TIMEOUT_S``.)

The same class limits open connections: a connection opened while ``max_connections`` others are open
is served by ``service.overload.overloaded_app`` (503 problem+json with Retry-After, then close) in
place of the app; uvicorn's own ``limit_concurrency`` (plain-text 503) is not used.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.overload import overloaded_app

__all__ = ["TIMEOUT_RESPONSE", "http_protocol"]

_TIMEOUT_BODY = b"the request head did not arrive in time\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)
log = logging.getLogger("wingmark.service")


def _base(kind: str) -> type[Any]:
    if kind == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:
            kind = "h11"
        else:
            kind = "httptools"
    if kind == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def http_protocol(kind: str, head_timeout_s: float, max_connections: int = 0) -> type[asyncio.Protocol]:
    """uvicorn's ``kind`` ("auto", "httptools" or "h11") protocol class, closing connections whose
    request head takes longer than ``head_timeout_s`` seconds (counted from the first wait), and
    answering 503 on connections past ``max_connections`` open ones (0: no limit)."""
    base = _base(kind)

    class HeadTimeoutProtocol(base):  # type: ignore[misc,valid-type]
        head_timeout = head_timeout_s
        _head_timer: asyncio.TimerHandle | None = None

        def _waiting_for_head(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def _arm(self) -> None:
            if self._head_timer is None and not self.transport.is_closing():
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._waiting_for_head() and not self.transport.is_closing():
                log.info(
                    "closed a connection whose request head did not arrive within %g s", self.head_timeout
                )
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)  # adds this connection to the server's set
            if max_connections and len(self.connections) > max_connections:
                log.warning(
                    "503: %d open connections, the limit is %d", len(self.connections), max_connections
                )
                self.app = overloaded_app  # this connection's requests get 503, then it closes
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # may complete a request head and start its cycle
            if self._waiting_for_head():
                self._arm()  # not re-armed by later bytes: a trickled head gets no more time
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle wait
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeadTimeoutProtocol.__name__ = HeadTimeoutProtocol.__qualname__ = f"HeadTimeout{base.__name__}"
    return HeadTimeoutProtocol
