"""Clients that hang up: status 499 in the metrics (never 500), one log line and no traceback, and the
work of their request skipped. Against real uvicorn on 127.0.0.1 (mid-upload) and the app in-process
with a slow real ONNX Runtime backend (hang-ups while queued)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import service.models
from model_store.store import ModelVersion
from runtime.backends import Backend, create_backend
from service.app import create_app
from service.disconnect import ClientDisconnectedError, cancel_on_disconnect
from service.settings import Settings
from tests.e2e.helpers import metric
from tests.service.images import encode
from tests.service.live import live_server, raw_request

FACE = encode(np.asarray(np.random.default_rng(5).integers(0, 255, (96, 96, 3)), np.uint8), "PNG")


def settings(store: Path, **kw: Any) -> Settings:
    return Settings(**{"model_root": store, "models": ["test-ibug68"], "detector": "none", **kw})


class CountingBackend:
    """The real ONNX Runtime backend, counting the faces each stage runs and holding each batch."""

    name = "onnxruntime"

    def __init__(self, inner: Backend, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.faces = [0, 0]

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        self.faces[stage] += len(batch)
        time.sleep(self.delay)
        return self.inner.run(stage, batch)

    def warmup(self, max_batch_size: int) -> None:
        self.inner.warmup(max_batch_size)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def counting_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], list[CountingBackend]]:
    made: list[CountingBackend] = []

    def install(delay: float) -> list[CountingBackend]:
        def factory(kind: str, model: ModelVersion, **kw: Any) -> Backend:
            made.append(CountingBackend(create_backend(kind, model, **kw), delay))
            return made[-1]

        monkeypatch.setattr(service.models, "create_backend", factory)
        return made

    return install


def test_cancel_on_disconnect_returns_the_result_or_cancels_the_work() -> None:
    async def main() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        assert await cancel_on_disconnect(receive, asyncio.sleep(0.01, "done")) == "done"
        cancelled = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        asyncio.get_running_loop().call_later(0.05, gone.set)
        started = time.monotonic()
        with pytest.raises(ClientDisconnectedError):
            await cancel_on_disconnect(receive, slow())
        assert cancelled.is_set() and time.monotonic() - started < 1.0

    asyncio.run(main())


def test_mid_upload_hang_ups_are_499_with_one_log_line_and_no_traceback(
    test_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with live_server(settings(test_store), log_config=None) as live:
        for _ in range(20):
            with live.connect() as sock:
                sock.sendall(raw_request("/v1/landmarks?box=1,1,60,60", FACE[:500], length=len(FACE)))
                time.sleep(0.01)
        with live.client() as client:
            assert client.post("/v1/landmarks", content=FACE, params={"box": "1,1,60,60"}).status_code == 200
            for _ in range(100):  # the server notices each hang-up when its socket closes
                text = client.get("/metrics").text
                if metric(text, "wingmark_http_requests_total", status="499") >= 20:
                    break
                time.sleep(0.05)
    assert metric(text, "wingmark_http_requests_total", route="/v1/landmarks", status="499") == 20
    assert metric(text, "wingmark_http_requests_total", status="500") == 0
    assert metric(text, "wingmark_rejected_requests_total", reason="client_disconnected") == 20
    lines = [r for r in caplog.records if "disconnect" in r.getMessage()]
    assert len(lines) == 20 and all(r.levelno == logging.INFO and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _abandoning_request(app: Any, gone: asyncio.Event) -> int:
    """POST /v1/landmarks straight through ASGI: the whole body, then a hang-up once ``gone`` is set."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": FACE, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/landmarks", "raw_path": b"/v1/landmarks", "query_string": b"box=1,1,60,60",
        "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(FACE)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "",
    }  # fmt: skip
    await app(scope, receive, send)
    return status


def test_work_of_requests_whose_client_left_is_skipped(
    test_store: Path, counting_backend: Callable[[float], list[CountingBackend]]
) -> None:
    """One request holds the device; ten more queue behind it and hang up: none of their faces runs."""
    backends = counting_backend(0.3)

    async def main() -> tuple[list[int], str]:
        app = create_app(settings(test_store, max_batch_size=1), load_in_background=False)
        async with app.router.lifespan_context(app):
            backend = backends[-1]
            warm = list(backend.faces)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
                holder = asyncio.ensure_future(
                    client.post("/v1/landmarks", content=FACE, params={"box": "1,1,60,60"})
                )
                while backend.faces[0] == warm[0]:
                    await asyncio.sleep(0.005)
                gone = asyncio.Event()
                leavers = [asyncio.ensure_future(_abandoning_request(app, gone)) for _ in range(10)]
                await asyncio.sleep(0.1)  # decoded, cropped and queued behind the holder
                gone.set()
                statuses = await asyncio.gather(*leavers)
                assert (await holder).status_code == 200
                await asyncio.sleep(0.7)  # anything still queued would have run by now
                ran = [f - w for f, w in zip(backend.faces, warm, strict=True)]
                text = (await client.get("/metrics")).text
        assert ran == [1, 1], ran  # the holder's face, once per stage
        return statuses, text

    statuses, text = asyncio.run(asyncio.wait_for(main(), 60))
    assert statuses == [499] * 10
    assert metric(text, "wingmark_http_requests_total", status="499") == 10
    assert metric(text, "wingmark_queue_depth") == 0
