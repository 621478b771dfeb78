"""A request's share of the crop thread: its faces are cropped in turns, other requests' turns run between
them, and a request that is gone stops between turns. In-process app, real ONNX Runtime, with the crop
step slowed down (and recorded) so that the order of turns is deterministic."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import service.landmarking
from service.app import create_app
from service.limits import in_turns
from service.settings import Settings
from tests.e2e.helpers import metric
from tests.service.images import encode

BIG = encode(np.asarray(np.random.default_rng(7).integers(0, 255, (300, 300, 3)), np.uint8), "PNG")
SMALL = encode(np.asarray(np.random.default_rng(8).integers(0, 255, (96, 96, 3)), np.uint8), "PNG")
WHOLE = [[0, 0, 300, 300]] * 32  # 32 whole-image boxes: the hostile request's shape


def test_in_turns_runs_chunks_in_order_one_at_a_time() -> None:
    calls: list[list[int]] = []

    async def run(work: Callable[[], Any]) -> Any:
        await asyncio.sleep(0)
        return work()

    def work(part: Any) -> int:
        calls.append(list(part))
        return sum(part)

    assert asyncio.run(in_turns(run, work, list(range(10)), 4)) == [6, 22, 17]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError):
        asyncio.run(in_turns(run, work, [1], 0))


@pytest.fixture
def slow_crops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int, int]]]:
    """Every crop turn takes 40 ms and is recorded as (image width, stage, faces)."""
    turns: list[tuple[int, int, int]] = []
    lock = threading.Lock()
    original = service.landmarking.Cascade.stage_inputs

    def slow(self: Any, stage: int, image: np.ndarray, **kw: Any) -> Any:
        out = original(self, stage, image, **kw)
        with lock:
            turns.append((image.shape[1], stage, len(out[0])))
        time.sleep(0.04)
        return out

    monkeypatch.setattr(service.landmarking.Cascade, "stage_inputs", slow)
    yield turns


def serve(store: Path, coro: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        s = Settings(model_root=store, models=["test-ibug68"], detector="none", crop_chunk_faces=8)
        app = create_app(s, load_in_background=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
                return await coro(client)

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_a_request_with_many_faces_does_not_hold_the_crop_thread(
    test_store: Path, slow_crops: list[tuple[int, int, int]]
) -> None:
    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        hostile = asyncio.ensure_future(
            client.post("/v1/landmarks", content=BIG, params={"boxes": str(WHOLE)})
        )
        while not slow_crops:
            await asyncio.sleep(0.002)
        good = await client.post("/v1/landmarks", content=SMALL, params={"box": "4,4,90,90"})
        return await hostile, good

    hostile, good = serve(test_store, scenario)
    assert hostile.status_code == good.status_code == 200
    assert len(hostile.json()["faces"]) == 32
    hostile_turns = [i for i, (width, stage, _) in enumerate(slow_crops) if width == 300 and stage == 0]
    good_turn = next(i for i, (width, stage, _) in enumerate(slow_crops) if width == 96 and stage == 0)
    assert [slow_crops[i][2] for i in hostile_turns] == [8, 8, 8, 8]  # 32 faces in 4 turns of 8
    assert good_turn < hostile_turns[-1]  # the good request's crop ran between the hostile's turns
    assert max(n for _, _, n in slow_crops) <= 8


@pytest.mark.parametrize(("views", "per_turn"), [(5, 5), (9, 9)])
def test_a_viewed_stage_crops_fewer_faces_a_turn(
    test_store: Path, slow_crops: list[tuple[int, int, int]], views: int, per_turn: int
) -> None:
    """32 faces with views 5 or 9 (crop chunk 8): stage 1 in turns of 8 faces, the viewed last stage in
    turns of one face, its views' crops (not 8 faces' 40 or 72)."""

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/v1/landmarks", content=BIG, params={"boxes": str(WHOLE), "views": views, "deadline_ms": 30000}
        )

    r = serve(test_store, scenario)
    assert r.status_code == 200 and len(r.json()["faces"]) == 32
    assert [n for _, stage, n in slow_crops if stage == 0] == [8, 8, 8, 8]
    assert [n for _, stage, n in slow_crops if stage == 1] == [per_turn] * 32


def test_a_request_past_its_deadline_stops_cropping_between_turns(
    test_store: Path, slow_crops: list[tuple[int, int, int]]
) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        r = await client.post("/v1/landmarks", content=BIG, params={"boxes": str(WHOLE), "deadline_ms": 60})
        await asyncio.sleep(0.3)  # any turn still queued would have run by now
        return r

    r = serve(test_store, scenario)
    assert r.status_code == 504
    cropped = sum(n for width, _, n in slow_crops if width == 300)
    assert 0 < cropped < 32  # it stopped part-way: the rest of its faces were never cropped


def test_a_request_with_many_faces_enters_the_batches_a_turn_at_a_time(test_store: Path) -> None:
    """32 faces of one request never make one batch: each crop turn's faces are queued once the previous
    turn is answered, so other requests' faces get into the next batch instead of waiting behind 32."""

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, str]:
        r = await client.post("/v1/landmarks", content=BIG, params={"boxes": str(WHOLE)})
        return r, (await client.get("/metrics")).text

    r, text = serve(test_store, scenario)
    assert r.status_code == 200 and len(r.json()["faces"]) == 32
    batches = metric(text, "wingmark_batch_size_count")
    assert batches >= 4  # four turns (the first stage's batches are the ones counted)
    assert metric(text, "wingmark_batch_size_bucket", le="8.0") == batches  # none over a turn's 8 faces
