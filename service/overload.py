"""Past the concurrency limit, every client is answered ``503`` problem+json with ``Retry-After``.

uvicorn's own ``limit_concurrency`` answers a plain-text 503; the service passes it none and limits
itself, at two levels, with the same answer (``urn:wingmark:problem:overloaded``):

- **requests in flight** (:class:`ConcurrencyLimitMiddleware`, ASGI, any server): past
  ``WINGMARK_LIMIT_CONCURRENCY`` requests being handled, a new one is answered at once, without
  reading its body. Requests outlive their connections (work of a client that hung up may still be
  finishing), so this is not the same count as the connections. ``/healthz`` and ``/metrics`` are
  not limited: a liveness probe or a scrape must not fail because the service is busy.
- **open connections** (``service.connections.http_protocol``): a connection opened while
  ``WINGMARK_LIMIT_CONCURRENCY`` others are open is served by :func:`overloaded_app` instead of the
  app: its request gets the same 503, then the connection is closed.
"""

from __future__ import annotations

import json
import logging
import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from service.metrics import Metrics

__all__ = ["RETRY_AFTER_S", "UNLIMITED_PATHS", "ConcurrencyLimitMiddleware", "overloaded_app"]

RETRY_AFTER_S = 1
UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})
log = logging.getLogger("wingmark.service")


def _problem(path: str, detail: str) -> bytes:
    return json.dumps({
        "type": "urn:wingmark:problem:overloaded",
        "title": "The service is overloaded",
        "status": 503,
        "detail": detail,
        "instance": path,
        "request_id": uuid.uuid4().hex,
    }).encode()  # fmt: skip


async def _send_503(scope: Scope, send: Send, detail: str, *, close: bool) -> None:
    body = _problem(str(scope.get("path", "")), detail)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def overloaded_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app a connection past the connection limit is served by: 503, then close."""
    if scope["type"] == "http":
        await _send_503(scope, send, "too many open connections; retry later", close=True)


class ConcurrencyLimitMiddleware:
    """At most ``limit`` HTTP requests in flight (0: no limit); the rest are answered 503 at once."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit or scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            log.warning("503: %d requests in flight, the limit is %d", self.in_flight, self.limit)
            if self.metrics is not None:
                self.metrics.rejected.labels("overloaded").inc()
            await _send_503(scope, send, "too many requests in flight; retry later", close=False)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
