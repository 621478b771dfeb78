"""Large images decoded in the separate, niced process (service.decode_worker): the same pixels and errors
as in-thread decoding, a cancelled decode kills the process (its work stops) and the next one starts a new
process, and the service sends images over WINGMARK_DECODE_WORKER_PIXELS there, with the same answer."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from runtime import DecodeDeferredError, ImageDecodeError, ImageTooLargeError, decode_image
from service.app import create_app
from service.decode_worker import DecodeWorker
from service.settings import Settings
from tests.reliability.hostile import hostile_png
from tests.service.images import encode, exif_orientation_jpeg, gradient

PHOTO = encode(np.asarray(np.random.default_rng(3).integers(0, 255, (240, 320, 3)), np.uint8), "PNG")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_worker_decodes_as_decode_image_does_and_raises_its_errors() -> None:
    rotated = exif_orientation_jpeg(gradient(64, 48), "SHORT", 6)

    async def main() -> None:
        worker = DecodeWorker(nice=5)
        try:
            for data in (PHOTO, rotated):
                ours = await worker.decode(data, max_pixels=10**7, max_side=2048)
                ref = decode_image(data, max_pixels=10**7, max_side=2048)
                assert np.array_equal(ours.pixels, ref.pixels)
                assert (ours.width, ours.height, ours.orientation) == (ref.width, ref.height, ref.orientation)
                ours.pixels[0, 0] = 1  # writable (copy-on-write) like an in-thread decode
            with pytest.raises(ImageDecodeError):
                await worker.decode(b"not an image", max_pixels=10**7)
            with pytest.raises(ImageTooLargeError):
                await worker.decode(PHOTO, max_pixels=1000)
            assert worker.decodes == 2 and worker.restarts == 0  # errors do not cost the process
            pid = worker.pid
            assert pid is not None
            assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) >= 5  # niced
        finally:
            worker.close()

    asyncio.run(main())


def test_a_cancelled_decode_kills_the_process_and_the_next_decode_starts_another() -> None:
    big = hostile_png(5000)  # ~0.4 s to decode

    async def main() -> None:
        worker = DecodeWorker()
        try:
            worker.start()
            while worker.pid is None:
                await asyncio.sleep(0.01)
            first = worker.pid
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(worker.decode(big, max_pixels=10**8), 0.1)
            assert time.monotonic() - started < 0.3  # the caller did not wait for the decode
            assert not alive(first)  # the work stopped with it
            image = await worker.decode(PHOTO, max_pixels=10**7)
            assert image.pixels.shape == (240, 320, 3)
            assert worker.restarts == 1 and worker.pid not in (None, first)
        finally:
            worker.close()

    asyncio.run(main())


def test_decode_image_defers_by_the_pixels_it_would_decode() -> None:
    with pytest.raises(DecodeDeferredError):
        decode_image(PHOTO, max_pixels=10**7, defer_pixels=320 * 240 - 1)
    assert decode_image(PHOTO, max_pixels=10**7, defer_pixels=320 * 240).pixels.shape == (240, 320, 3)
    jpeg = encode(np.zeros((1600, 1600, 3), np.uint8), "JPEG")  # decoded at 1/4 for max_side 400
    assert decode_image(jpeg, max_pixels=10**7, max_side=400, defer_pixels=400 * 400).pixels.shape[0] == 400
    with pytest.raises(DecodeDeferredError):
        decode_image(jpeg, max_pixels=10**7, max_side=400, defer_pixels=400 * 400 - 1)


def serve(store: Path, scenario: Any, **settings: Any) -> Any:
    async def main() -> Any:
        s = Settings(model_root=store, models=["test-ibug68"], detector="none", **settings)
        app = create_app(s, load_in_background=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=30) as client:
                return await scenario(client, app.state.service)

    return asyncio.run(asyncio.wait_for(main(), 60))


def test_the_service_decodes_large_images_in_the_worker_and_its_deadline_stops_it(test_store: Path) -> None:
    box = {"box": "20,20,200,200"}
    big = hostile_png(5000)

    async def scenario(client: httpx.AsyncClient, service: Any) -> dict[str, Any]:
        post: dict[str, Any] = {"content": PHOTO, "headers": {"content-type": "image/png"}, "params": box}
        first = await client.post("/v1/landmarks", **post)
        out: dict[str, Any] = {"answer": first.json()["faces"], "worker": service._big}
        if service._big is not None:
            assert service._big.decodes == 1
            while service._big.pid is None:
                await asyncio.sleep(0.01)
            pid = service._big.pid
            r = await client.post("/v1/landmarks", content=big, headers={"content-type": "image/png"},
                                  params={**box, "deadline_ms": 100})  # fmt: skip
            assert r.status_code == 504
            assert not alive(pid)
            again = await client.post("/v1/landmarks", **post)
            assert again.json()["faces"] == out["answer"] and service._big.restarts == 1
        return out

    in_worker = serve(test_store, scenario, decode_worker_pixels=10_000)
    in_thread = serve(test_store, scenario, decode_worker_pixels=0)
    assert in_worker["worker"] is not None and in_thread["worker"] is None
    assert in_worker["answer"] == in_thread["answer"]
