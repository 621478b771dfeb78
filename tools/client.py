"""Python clients for the wingmark HTTP API (httpx; sync and async).

    with LandmarkClient("http://127.0.0.1:8000") as client:
        result = client.landmarks("face.jpg", boxes=[[10, 20, 110, 140]])
        for face in result["faces"]:
            print(face["box"], face["landmarks"][:3])

Errors come back as :class:`WingmarkAPIError` carrying the RFC 9457 problem document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["AsyncLandmarkClient", "LandmarkClient", "WingmarkAPIError", "guess_content_type"]

DEFAULT_URL = "http://127.0.0.1:8000"
ImageInput = bytes | str | Path

_MAGIC = [
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
]


class WingmarkAPIError(RuntimeError):
    """A non-2xx answer; ``problem`` is the problem+json body (type, title, status, detail, ...)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())


def guess_content_type(data: bytes) -> str:
    """Media type from the first bytes (application/octet-stream when unknown: the server sniffs)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, media in _MAGIC:
        if data.startswith(magic):
            return media
    return "application/octet-stream"


def _read(image: ImageInput) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _params(
    boxes: Sequence[Sequence[float]] | None,
    scheme: str | None,
    model: str | None,
    max_faces: int | None,
    deadline_ms: float | None,
    views: int | None = None,
    refine: str | None = None,
) -> dict[str, str]:
    params: dict[str, str] = {}
    if boxes is not None:
        params["boxes"] = json.dumps([[float(v) for v in b] for b in boxes])
    if scheme:
        params["scheme"] = scheme
    if model:
        params["model"] = model
    if max_faces is not None:
        params["max_faces"] = str(max_faces)
    if deadline_ms is not None:
        params["deadline_ms"] = str(deadline_ms)
    if views is not None:
        params["views"] = str(views)
    if refine is not None:
        params["refine"] = refine
    return params


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        body: dict[str, Any] = response.json()
        return body
    try:
        problem = response.json()
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text[:200]}
    raise WingmarkAPIError(
        response.status_code, problem if isinstance(problem, dict) else {"detail": problem}
    )


class LandmarkClient:
    """Blocking client."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0, **httpx_options: Any) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, **httpx_options)

    def landmarks(
        self,
        image: ImageInput,
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        scheme: str | None = None,
        model: str | None = None,
        max_faces: int | None = None,
        deadline_ms: float | None = None,
        views: int | None = None,
        refine: str | None = None,
    ) -> dict[str, Any]:
        """POST the image as the raw body; returns the response document (faces, model, timings).
        ``views``: the last stage's crops per face (1, 5 or 9); ``refine``: which faces run the cascade
        again (never, detector, always); None: the service's setting."""
        data = _read(image)
        response = self._http.post(
            "/v1/landmarks",
            content=data,
            headers={"content-type": guess_content_type(data)},
            params=_params(boxes, scheme, model, max_faces, deadline_ms, views, refine),
        )
        return _result(response)

    def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = _result(self._http.get("/v1/models"))["models"]
        return models

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LandmarkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLandmarkClient:
    """asyncio client; the same methods as :class:`LandmarkClient`, awaitable."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0, **httpx_options: Any) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, **httpx_options)

    async def landmarks(
        self,
        image: ImageInput,
        *,
        boxes: Sequence[Sequence[float]] | None = None,
        scheme: str | None = None,
        model: str | None = None,
        max_faces: int | None = None,
        deadline_ms: float | None = None,
        views: int | None = None,
        refine: str | None = None,
    ) -> dict[str, Any]:
        data = _read(image)
        response = await self._http.post(
            "/v1/landmarks",
            content=data,
            headers={"content-type": guess_content_type(data)},
            params=_params(boxes, scheme, model, max_faces, deadline_ms, views, refine),
        )
        return _result(response)

    async def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = _result(await self._http.get("/v1/models"))["models"]
        return models

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def healthy(self) -> bool:
        try:
            return (await self._http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLandmarkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
