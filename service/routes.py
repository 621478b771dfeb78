"""HTTP routes: request parsing (multipart, JSON, raw image body) and thin adapters to
:class:`service.landmarking.LandmarkService`; every response is built from a pydantic model in
:mod:`service.schemas` and validated against it (``response_model``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from runtime.cascade import VIEWS
from runtime.landmarker import REFINE
from service.disconnect import ClientDisconnectedError, cancel_on_disconnect
from service.errors import PROBLEM_JSON, ProblemError, problem_response
from service.landmarking import MIN_DEADLINE_MS, LandmarkRequest, LandmarkService
from service.metrics import CONTENT_TYPE_LATEST
from service.schemas import DetectorInfo, LandmarkResponse, ModelInfo, ModelsResponse, ReadyResponse
from service.settings import Settings, get_settings

__all__ = ["IMAGE_TYPES", "OPTIONS", "router"]

router = APIRouter()

# Raw-body media types accepted by POST /v1/landmarks (the bytes are sniffed; the type only gates).
IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp", "image/gif",
     "image/tiff", "image/x-portable-pixmap", "application/octet-stream"}
)  # fmt: skip

# The request options every body form accepts (multipart fields, JSON keys, query parameters; the
# query also takes repeatable `box`). Each is documented in the OpenAPI schema (tests hold them equal).
OPTIONS = ("model", "scheme", "boxes", "max_faces", "deadline_ms", "pose", "views", "refine")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": desc, "content": {PROBLEM_JSON: {"schema": {"type": "object"}}}}
    for code, desc in {
        400: "undecodable image, malformed body or invalid boxes",
        408: "the request body arrived too slowly",
        413: "request body over the size limit, or image over the pixel limit",
        415: "unsupported media type or image format",
        422: "invalid parameters or unknown model",
        429: "queue full (see Retry-After)",
        503: "not ready (models loading or failed; see Retry-After)",
        504: "the request's deadline passed",
    }.items()
}
_VIEWS_HELP = "crops per face at the last stage, averaged (default and most: GET /v1/models)"
_REFINE_HELP = "which faces run the cascade again from their own points' box (default: GET /v1/models)"
_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "model": {"type": "string"},
                    "scheme": {"type": "string", "enum": ["ibug68", "aflw19"]},
                    "boxes": {"type": "string", "description": "JSON list of [x1, y1, x2, y2]"},
                    "max_faces": {"type": "integer"},
                    "deadline_ms": {"type": "number", "description": "shorter deadline for this request"},
                    "pose": {"type": "boolean", "description": "also estimate each face's head pose"},
                    "views": {"type": "integer", "enum": list(VIEWS), "description": _VIEWS_HELP},
                    "refine": {"type": "string", "enum": list(REFINE), "description": _REFINE_HELP},
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "description": "base64 (a data: URL prefix is allowed)"},
                    "model": {"type": "string"},
                    "scheme": {"type": "string", "enum": ["ibug68", "aflw19"]},
                    "boxes": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "max_faces": {"type": "integer"},
                    "deadline_ms": {"type": "number"},
                    "pose": {"type": "boolean", "description": "also estimate each face's head pose"},
                    "views": {"type": "integer", "enum": list(VIEWS), "description": _VIEWS_HELP},
                    "refine": {"type": "string", "enum": list(REFINE), "description": _REFINE_HELP},
                },
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _service(request: Request) -> LandmarkService:
    service: LandmarkService = request.app.state.service
    return service


async def _read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (413) before reading it where possible."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProblemError("request-too-large", f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):  # a slow upload holds no connection for ever
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ProblemError("request-too-large", f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ProblemError(
            "request-timeout", f"the body did not arrive within {timeout_s:g} s ({size} bytes read)"
        ) from None
    except ClientDisconnect:  # hung up mid-upload: its own outcome (499), not a server error
        raise ClientDisconnectedError("upload") from None
    body = b"".join(chunks)
    request._body = body  # lets request.form() / request.json() parse the bytes already read
    return body


def _json_loads(text: str | bytes, slug: str, detail: str) -> Any:
    """``json.loads`` that turns every malformed document (bad syntax, bad UTF-8, nesting deeper than
    the parser's recursion limit) into a 400 problem; numbers stay as Python parses them."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProblemError(slug, detail) from None


def _coordinate(value: Any) -> float:
    """A box coordinate: a JSON number (not a bool) that fits a finite float, else 400."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProblemError("invalid-boxes", "boxes must be a list of [x1, y1, x2, y2] numbers")
    try:
        number = float(value)  # an integer of 400 digits overflows
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ProblemError("invalid-boxes", "box coordinates must be finite numbers")
    return number


def _parse_boxes(value: Any) -> list[list[float]]:
    """JSON text or a list -> list of 4-number boxes (range checks come later); 400 on malformed input."""
    if isinstance(value, str):
        value = _json_loads(value, "invalid-boxes", "boxes must be JSON: [[x1, y1, x2, y2], ...]")
    if isinstance(value, list) and len(value) == 4 and not any(isinstance(v, list) for v in value):
        value = [value]  # a single box
    if not isinstance(value, list) or not all(isinstance(b, list) for b in value):
        raise ProblemError("invalid-boxes", "boxes must be a list of [x1, y1, x2, y2] numbers")
    for i, b in enumerate(value):
        if len(b) != 4:
            raise ProblemError("invalid-boxes", f"box {i} has {len(b)} numbers; a box is [x1, y1, x2, y2]")
    return [[_coordinate(v) for v in b] for b in value]


def _parse_box_params(values: list[str]) -> list[list[float]]:
    boxes = []
    for text in values:
        try:
            box = [float(v) for v in text.split(",")]
        except ValueError:
            box = []
        if len(box) != 4:
            raise ProblemError("invalid-boxes", f"box {text[:40]!r} is not x1,y1,x2,y2")
        if not all(math.isfinite(v) for v in box):
            raise ProblemError("invalid-boxes", "box coordinates must be finite numbers")
        boxes.append(box)
    return boxes


def _number(name: str, value: Any, kind: type[int] | type[float]) -> int | float | None:
    if value is None or value == "":
        return None
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProblemError("invalid-parameters", f"{name} must be {what}")
    try:
        number = kind(value)  # int(inf) and float(<400 digits>) raise OverflowError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ProblemError("invalid-parameters", f"{name} must be {what}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ProblemError("invalid-parameters", f"{name} must be a finite number")
    return number


def _flag(name: str, value: Any) -> bool:
    """A boolean option: JSON true/false, or the text true/false/1/0/yes/no/on/off (form fields)."""
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ProblemError("invalid-parameters", f"{name} must be true or false")


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _field_bytes(value: str) -> bytes:
    """The bytes of a multipart text field (a part without a filename). Starlette decoded them as UTF-8
    where they were valid UTF-8, else as Latin-1: binary data (an image) comes back byte for byte, text
    as its UTF-8 bytes (it is then refused as an image, 400, never a crash)."""
    try:
        raw = value.encode("latin-1")
        raw.decode("utf-8")
    except UnicodeEncodeError:  # had characters beyond Latin-1: it was UTF-8
        return value.encode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # not valid UTF-8: Starlette fell back to Latin-1
        return raw
    return value.encode("utf-8", "surrogatepass")


def _text(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProblemError("invalid-parameters", f"{name} must be a string")
    return value


async def _parse_request(request: Request, settings: Settings, query: dict[str, Any]) -> LandmarkRequest:
    content_type = request.headers.get("content-type", "application/octet-stream")
    media = content_type.split(";")[0].strip().lower()
    body = await _read_body(request, settings.max_request_bytes, settings.body_timeout_s)
    options: dict[str, Any] = {k: v for k, v in query.items() if v is not None}
    body_boxes = False
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:
            raise ProblemError("invalid-request", f"malformed multipart body: {exc}") from None
        upload = form.get("image")
        if upload is None:
            raise ProblemError("invalid-request", "the multipart body has no 'image' field")
        if isinstance(upload, UploadFile):
            data = await upload.read()
        else:
            data = _field_bytes(upload)
        for key in OPTIONS:
            if form.get(key) is not None:
                options[key] = form.get(key)
        body_boxes = form.get("boxes") is not None
    elif media == "application/json" or media.endswith("+json"):
        payload = _json_loads(body, "invalid-request", "the body is not valid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise ProblemError("invalid-request", "JSON body must be an object with a base64 'image' string")
        encoded = payload["image"]
        if encoded.startswith("data:"):
            encoded = encoded.partition(",")[2]
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProblemError("invalid-image", "'image' is not valid base64") from None
        unknown = set(payload) - {"image", *OPTIONS}
        if unknown:
            raise ProblemError("invalid-parameters", f"unknown keys: {sorted(unknown)}")
        options.update({k: v for k, v in payload.items() if k != "image" and v is not None})
        body_boxes = payload.get("boxes") is not None
    elif media in IMAGE_TYPES:
        data = body
    else:
        raise ProblemError(
            "unsupported-media-type",
            f"unsupported content type {media!r}; send multipart/form-data, application/json or image/*",
        )
    if not data:
        raise ProblemError("invalid-image", "the image is empty")
    scheme = _text("scheme", options.get("scheme"))
    boxes = options.get("boxes")
    box_list = _parse_boxes(boxes) if boxes is not None else None
    if options.get("box") and not body_boxes:  # the body's boxes win over the query's, as for every option
        box_list = (box_list or []) + _parse_box_params(options["box"])
    return LandmarkRequest(
        data=data,
        model=_text("model", options.get("model")),
        scheme=scheme,
        boxes=box_list,
        max_faces=_number("max_faces", options.get("max_faces"), int),  # type: ignore[arg-type]
        deadline_ms=_number("deadline_ms", options.get("deadline_ms"), float),
        pose=_flag("pose", options.get("pose")),
        views=_number("views", options.get("views"), int),  # type: ignore[arg-type]
        refine=_text("refine", options.get("refine")),
    )


@router.post(
    "/v1/landmarks",
    response_model=LandmarkResponse,
    response_model_exclude_unset=True,  # a face's "pose" key only when pose was asked for
    responses=_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY},
    summary="Facial landmarks for every face in an image",
)
async def landmarks(
    request: Request,
    response: Response,
    settings: Annotated[Settings, Depends(get_settings)],
    model: Annotated[
        str | None, Query(description="model name (default: the scheme's default model)")
    ] = None,
    scheme: Annotated[Literal["ibug68", "aflw19"] | None, Query(description="landmark scheme")] = None,
    boxes: Annotated[str | None, Query(description="JSON [[x1, y1, x2, y2], ...]; skips detection")] = None,
    box: Annotated[list[str] | None, Query(description="one face box x1,y1,x2,y2 (repeatable)")] = None,
    max_faces: Annotated[int | None, Query(ge=1, description="keep at most this many detected faces")] = None,
    deadline_ms: Annotated[
        float | None, Query(ge=MIN_DEADLINE_MS, description="shorter deadline for this request")
    ] = None,
    pose: Annotated[
        bool | None,
        Query(
            description="also estimate each face's head pose (yaw, pitch, roll in degrees; see docs/api.md)"
        ),
    ] = None,
    views: Annotated[int | None, Query(description=_VIEWS_HELP + ": " + ", ".join(map(str, VIEWS)))] = None,
    refine: Annotated[str | None, Query(description=_REFINE_HELP + ": " + ", ".join(REFINE))] = None,
) -> LandmarkResponse:
    service = _service(request)
    query = {"model": model, "scheme": scheme, "boxes": boxes, "box": box, "max_faces": max_faces,
             "deadline_ms": deadline_ms, "pose": pose, "views": views, "refine": refine}  # fmt: skip
    req = await _parse_request(request, settings, query)
    result = await cancel_on_disconnect(request.receive, service.predict(req))
    started = time.monotonic()
    body = result.to_response()
    response.headers["Server-Timing"] = result.server_timing()
    service.metrics.stage_duration.labels("serialise").observe(time.monotonic() - started)
    return body


@router.get("/v1/models", response_model=ModelsResponse, summary="Loaded models")
async def models(request: Request) -> ModelsResponse:
    service = _service(request)
    out = []
    for lm in service.models.values():
        out.append(
            ModelInfo(
                name=lm.name,
                version=lm.version,
                scheme=lm.scheme,
                num_points=lm.num_points,
                backend=lm.backend_name,
                device=lm.device,
                input_sizes=lm.input_sizes,
                stages=len(lm.input_sizes),
                default_for_scheme=service.defaults.get(lm.scheme) == lm.name,
                box_calibrations=lm.calibration_names,
                ready=lm.ready,
                error=lm.error,
                precision="int8" if lm.precision == "int8" else "float",
                precision_reason=lm.precision_reason,
                float_model=lm.float_name or lm.name,
            )
        )
    return ModelsResponse(
        models=out,
        detector=DetectorInfo.of(service.detector),
        refine=service.settings.refine,
        views=service.settings.views,
        max_views=service.settings.max_views,
    )


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: _ERRORS[503]}, summary="Readiness")
async def readyz(request: Request) -> ReadyResponse | Response:
    service = _service(request)
    ready = {name: lm.ready for name, lm in service.models.items()}
    errors = {name: lm.error for name, lm in service.models.items() if lm.error}
    if service.load_error:
        errors["service"] = service.load_error
    if service.ready:
        return ReadyResponse(status="ready", models=ready, errors=errors)
    return problem_response(
        request, "not-ready", service.not_ready_reason(),
        headers={"Retry-After": "5"}, extra={"state": service.state, "models": ready, "errors": errors},
    )  # fmt: skip


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
