"""The FastAPI application factory.

Nothing happens at import time: :func:`create_app` builds the app, and its lifespan builds the
:class:`~service.landmarking.LandmarkService` (store, backends, detector, batchers) on ``app.state``.
Models load in the background, so ``/healthz`` answers at once and ``/readyz`` turns 200 when every
model is loaded and warmed up. On shutdown uvicorn stops accepting connections and waits for the
requests in flight; then the lifespan drains the batchers and releases the backends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.demo import install_demo
from service.errors import install_error_handlers
from service.landmarking import LandmarkService
from service.metrics import Metrics
from service.overload import ConcurrencyLimitMiddleware
from service.routes import router
from service.settings import Settings, get_settings
from service.version import app_version

__all__ = ["create_app"]


class MetricsMiddleware:
    """Counts and times every HTTP request by route template, method and status; sets X-Request-ID."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),  # every body is what its type says
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.http_requests.labels(template, method, str(status)).inc()
            self.metrics.http_duration.labels(template, method).observe(time.perf_counter() - start)


def create_app(settings: Settings | None = None, *, load_in_background: bool = True) -> FastAPI:
    """Build the app. ``settings`` default to :func:`get_settings` (the WINGMARK_* environment)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        service = LandmarkService(settings, metrics)
        app.state.settings = settings
        app.state.service = service
        await service.start(background=load_in_background)
        try:
            yield {}
        finally:
            await service.stop()

    app = FastAPI(
        title="wingmark",
        summary="Facial landmarks (68-point iBUG, 19-point AFLW) after Feng et al., Wing loss, CVPR 2018",
        version=app_version(),
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.dependency_overrides[get_settings] = lambda: settings  # routes reach these settings via Depends
    install_error_handlers(app)
    app.include_router(router)
    install_demo(app)
    # past the limit: 503 problem+json (counted by the metrics middleware, which wraps it)
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.limit_concurrency, metrics=metrics)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
