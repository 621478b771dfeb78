"""RFC 9457 problem details: every error the service returns is ``application/problem+json``.

Each kind of problem has a stable ``type`` URI (``urn:wingmark:problem:<slug>``) that clients
can switch on; ``title`` is fixed per type; ``detail`` explains this occurrence; ``instance``
is the request path, with a ``request_id`` member naming the occurrence.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.disconnect import CLIENT_CLOSED_STATUS, ClientDisconnectedError

__all__ = [
    "PROBLEMS",
    "PROBLEM_JSON",
    "ProblemError",
    "install_error_handlers",
    "problem_response",
    "redact_paths",
]

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:wingmark:problem:"

log = logging.getLogger("wingmark.service")


# An absolute filesystem path (POSIX or Windows) inside a message: clients never see where files live.
_PATH = re.compile(r"""(?:(?<![\w.:/])/|\b[A-Za-z]:\\)[^\s'"`,;:()<>]*""")


def redact_paths(text: str) -> str:
    """``text`` with every absolute filesystem path replaced by ``<path>`` (for details clients read;
    the log keeps the full message)."""
    return _PATH.sub("<path>", text)


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.slug


PROBLEMS: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType("invalid-image", 400, "The image cannot be decoded"),
        ProblemType("invalid-boxes", 400, "The face boxes are invalid"),
        ProblemType("invalid-request", 400, "The request body is malformed"),
        ProblemType("not-found", 404, "No such resource"),
        ProblemType("method-not-allowed", 405, "Method not allowed"),
        ProblemType("request-timeout", 408, "The request body arrived too slowly"),
        ProblemType("request-too-large", 413, "The request body is too large"),
        ProblemType("image-too-large", 413, "The image has too many pixels"),
        ProblemType("unsupported-media-type", 415, "Unsupported media type"),
        ProblemType("invalid-parameters", 422, "Invalid parameters"),
        ProblemType("unknown-model", 422, "No such model is loaded"),
        ProblemType("queue-full", 429, "Too many requests are queued"),
        ProblemType("client-closed-request", CLIENT_CLOSED_STATUS, "The client closed the connection"),
        ProblemType("internal-error", 500, "Internal server error"),
        ProblemType("inference-failed", 500, "Inference failed"),
        ProblemType("not-ready", 503, "The service is not ready"),
        ProblemType("overloaded", 503, "The service is overloaded"),  # service.overload answers it
        ProblemType("deadline-exceeded", 504, "The request's deadline passed"),
    )
}


class ProblemError(Exception):
    """Raise anywhere in request handling to answer with a problem+json body."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = PROBLEMS[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(
    request: Request,
    slug: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    problem = PROBLEMS[slug]
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id,
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=problem.status, headers=headers, media_type=PROBLEM_JSON)


def _slug_for_status(status: int) -> str:
    for problem in PROBLEMS.values():
        if problem.status == status:
            return problem.slug
    return "internal-error" if status >= 500 else "invalid-request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every error (ours, FastAPI's validation, Starlette's 404/405, crashes) to problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(request, exc.problem.slug, exc.detail, headers=exc.headers, extra=exc.extra)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return problem_response(request, "invalid-parameters", "request parameters failed validation",
                                extra={"errors": errors})  # fmt: skip

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        slug = _slug_for_status(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(request, slug, detail, headers=dict(exc.headers or {}))

    async def on_disconnect(request: Request, exc: Exception) -> JSONResponse:
        # Nobody reads this answer (the server drops it); its status labels the outcome in the metrics.
        stage = exc.stage if isinstance(exc, ClientDisconnectedError) else "the request"
        log.info("client disconnected during %s: %s %s", stage, request.method, request.url.path)
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.rejected.labels("client_disconnected").inc()
        return problem_response(request, "client-closed-request", f"the client disconnected during {stage}")

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return problem_response(request, "internal-error", f"{type(exc).__name__}")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(ClientDisconnectedError, on_disconnect)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)
