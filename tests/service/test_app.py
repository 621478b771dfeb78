"""The app in-process (ASGI, no sockets): settings, metrics isolation, failure paths needing a slow or
failing backend (a thin wrapper around the real ONNX Runtime backend), and wingmark predict."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import service.models
from model_store.store import ModelVersion
from runtime.backends import Backend, create_backend
from service.app import create_app
from service.settings import Settings, get_settings
from tests.e2e.helpers import assert_problem, metric
from tests.service.images import encode

FACE = encode(np.asarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3)), np.uint8), "PNG")
WHITE = encode(np.full((160, 160, 3), 255, np.uint8), "PNG")
BOX = {"box": "20,20,140,140"}


class WrappedBackend:
    """The real ONNX Runtime backend, made slow or failing on demand (white crops fail their batch)."""

    name = "onnxruntime"

    def __init__(self, inner: Backend, delay: float, warmup_delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.warmup_delay = warmup_delay

    def run(self, stage: int, batch: np.ndarray) -> np.ndarray:
        if stage == 0 and (batch.reshape(len(batch), -1).min(axis=1) > 0.99).any():
            raise RuntimeError("white crop: simulated device failure")
        time.sleep(self.delay)
        return self.inner.run(stage, batch)

    def warmup(self, max_batch_size: int) -> None:
        time.sleep(self.warmup_delay)
        self.inner.warmup(max_batch_size)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def wrap_backend(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def install(delay: float = 0.0, warmup_delay: float = 0.0) -> None:
        def factory(kind: str, model: ModelVersion, **kw: Any) -> Backend:
            return WrappedBackend(create_backend(kind, model, **kw), delay, warmup_delay)

        monkeypatch.setattr(service.models, "create_backend", factory)

    return install


def settings(store: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {"model_root": store, "models": ["test-ibug68"], "detector": "none"}
    return Settings(**{**base, **kw})


@asynccontextmanager
async def serving(s: Settings, *, wait: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(s)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://wingmark.test", timeout=30
        ) as client:
            if wait:
                for _ in range(300):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.02)
            yield client


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def post(client: httpx.AsyncClient, data: bytes = FACE, /, **params: Any) -> httpx.Response:
    return await client.post(
        "/v1/landmarks", content=data, headers={"content-type": "image/png"}, params=params
    )


def test_settings_come_from_wingmark_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WINGMARK_PORT", "9123")
    monkeypatch.setenv("WINGMARK_MODELS", "a, b@2")
    monkeypatch.setenv("WINGMARK_MODEL_ROOT", str(tmp_path))
    monkeypatch.setenv("WINGMARK_MAX_QUEUE_DELAY_MS", "7.5")
    monkeypatch.setenv("WINGMARK_DETECTOR", "none")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert (s.port, s.models, s.model_root, s.max_queue_delay_ms, s.detector) == (
            9123, ["a", "b@2"], tmp_path, 7.5, "none",
        )  # fmt: skip
        assert get_settings() is s  # cached
        assert (s.host, s.backend, s.device) == ("127.0.0.1", "onnxruntime", "cpu")
        monkeypatch.setenv("WINGMARK_BACKEND", "cuda-magic")
        get_settings.cache_clear()
        with pytest.raises(ValueError):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_the_detector_setting_names_a_registered_detector() -> None:
    from runtime.detectors import DETECTORS

    assert Settings(detector="none").detector == "none"
    for name in DETECTORS:
        assert Settings(detector=name).detector == name
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        Settings(detector="haar")
    assert Settings().detector_options()["min_face"] == Settings().detect_min_face


def test_routes_reach_settings_through_the_get_settings_dependency(test_store: Path) -> None:
    """create_app(settings) overrides get_settings; a test (or an app) can swap them like any dependency."""

    async def main() -> None:
        s = settings(test_store)
        app = create_app(s)
        assert app.dependency_overrides[get_settings]() is s
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://wingmark.test") as c:
                for _ in range(300):
                    if (await c.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.02)
                assert (await post(c, **BOX)).status_code == 200
                app.dependency_overrides[get_settings] = lambda: s.model_copy(
                    update={"max_request_bytes": 100}
                )
                assert_problem(await post(c, **BOX), 413, "request-too-large")

    run(main())


def test_every_accepted_option_is_documented_and_responses_follow_their_models(test_store: Path) -> None:
    """multipart fields, JSON keys and query parameters: each accepted option is in the OpenAPI schema
    (deadline_ms was missing from multipart once), and a 200 body validates against LandmarkResponse."""
    from service.routes import OPTIONS
    from service.schemas import LandmarkResponse

    async def main() -> None:
        async with serving(settings(test_store)) as c:
            spec = (await c.get("/openapi.json")).json()
            op = spec["paths"]["/v1/landmarks"]["post"]
            bodies = op["requestBody"]["content"]
            for media in ("multipart/form-data", "application/json"):
                assert set(bodies[media]["schema"]["properties"]) == {"image", *OPTIONS}, media
            assert {p["name"] for p in op["parameters"]} == {*OPTIONS, "box"}
            assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/LandmarkResponse"
            }
            r = await post(c, **BOX, pose="true")
            assert r.status_code == 200 and "server-timing" in r.headers
            body = r.json()
            assert LandmarkResponse.model_validate(body).model_dump(exclude_unset=True) == body
            assert "pose" in body["faces"][0]
            assert "pose" not in (await post(c, **BOX)).json()["faces"][0]  # only when asked for
            r = await c.post("/v1/landmarks", files={"image": ("f.png", FACE, "image/png")},
                             data={"boxes": "[[20, 20, 140, 140]]", "deadline_ms": "5"})  # fmt: skip
            assert_problem(r, 422, "invalid-parameters")  # multipart's deadline_ms is read and checked

    run(main())


def test_each_app_has_its_own_metrics_registry(test_store: Path) -> None:
    async def main() -> tuple[str, str]:
        s = settings(test_store)
        async with serving(s) as a, serving(s) as b:
            for _ in range(2):
                assert (await post(a, **BOX)).status_code == 200
            return (await a.get("/metrics")).text, (await b.get("/metrics")).text

    text_a, text_b = run(main())
    assert metric(text_a, "wingmark_http_requests_total", route="/v1/landmarks", status="200") == 2
    assert metric(text_b, "wingmark_http_requests_total", route="/v1/landmarks") == 0
    assert metric(text_a, "wingmark_faces_per_request_sum") == 2


def test_readiness_waits_for_warmup(test_store: Path, wrap_backend: Callable[..., None]) -> None:
    wrap_backend(warmup_delay=0.5)

    async def main() -> None:
        async with serving(settings(test_store), wait=False) as c:
            assert (await c.get("/healthz")).status_code == 200
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json()["state"] == "loading"
            assert_problem(await post(c, **BOX), 503, "not-ready")
            for _ in range(200):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.02)
            assert (await post(c, **BOX)).status_code == 200
            assert (
                'wingmark_rejected_requests_total{reason="not_ready"} 1.0' in (await c.get("/metrics")).text
            )

    run(main())


def test_a_failing_batch_fails_only_its_requests(test_store: Path, wrap_backend: Callable[..., None]) -> None:
    wrap_backend()

    async def main() -> None:
        async with serving(settings(test_store)) as c:
            assert (await post(c, **BOX)).status_code == 200
            assert_problem(await post(c, WHITE, **BOX), 500, "inference-failed")
            assert (await post(c, **BOX)).status_code == 200  # the worker lives on
            text = (await c.get("/metrics")).text
            assert metric(text, "wingmark_batch_failures_total") == 1

    run(main())


def test_queue_overflow_under_load_gives_429_and_others_succeed(
    test_store: Path, wrap_backend: Callable[..., None]
) -> None:
    wrap_backend(delay=0.2)

    async def main() -> list[httpx.Response]:
        s = settings(test_store, queue_limit=3, max_batch_size=2, max_queue_delay_ms=1)
        async with serving(s) as c:
            return list(await asyncio.gather(*(post(c, **BOX) for _ in range(12))))

    responses = run(main())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) >= 3
    for r in responses:
        if r.status_code == 429:
            assert_problem(r, 429, "queue-full")
            assert r.headers["retry-after"] == "1"


def test_deadline_passes_while_queued(test_store: Path, wrap_backend: Callable[..., None]) -> None:
    wrap_backend(delay=0.3)

    async def main() -> None:
        s = settings(test_store, max_batch_size=1, max_queue_delay_ms=0)
        async with serving(s) as c:
            slow = asyncio.ensure_future(post(c, **BOX))
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            late = await post(c, deadline_ms=100, **BOX)
            assert time.monotonic() - t0 < 0.3
            assert_problem(late, 504, "deadline-exceeded")
            assert (await slow).status_code == 200
            assert 'wingmark_rejected_requests_total{reason="deadline"} 1.0' in (await c.get("/metrics")).text

    run(main())


def test_requests_need_boxes_without_a_detector(test_store: Path) -> None:
    async def main() -> None:
        async with serving(settings(test_store)) as c:
            body = assert_problem(await post(c), 422, "invalid-parameters")
            assert "detector" in body["detail"]

    run(main())


def test_lifespan_stop_drains_threads(test_store: Path) -> None:
    before = threading.active_count()

    async def main() -> None:
        async with serving(settings(test_store)) as c:
            assert (await post(c, **BOX)).status_code == 200

    run(main())
    time.sleep(0.2)
    assert threading.active_count() <= before + 1


def test_the_serving_path_never_imports_torch_or_onnx(test_store: Path) -> None:
    """Build the app, load the models (ONNX Runtime + dlib) and answer a request in a fresh interpreter."""
    import subprocess
    import sys

    code = f"""
import asyncio, sys
from service.landmarking import LandmarkRequest, LandmarkService
from service.settings import Settings
import service.app, service.server
async def main():
    s = LandmarkService(Settings(model_root={str(test_store)!r}))
    await s.start(background=False)
    assert s.ready, s.load_error
    from tests.service.images import encode, gradient
    r = await s.predict(LandmarkRequest(encode(gradient(), "PNG"), boxes=[[10, 10, 60, 60]]))
    assert len(r.faces) == 1
    await s.stop()
asyncio.run(main())
bad = sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "onnx", "tensorrt"}})
print("IMPORTED", bad)
"""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout, proc.stdout


@pytest.mark.parametrize("policy", ["greedy", "timed"])
def test_batch_policy_a_lone_request_and_a_crowd(
    test_store: Path, wrap_backend: Callable[..., None], policy: str
) -> None:
    """Greedy (the default): a lone request runs at once although max_queue_delay_ms is 1.5 s (the
    timed policy holds it that long, at each of the two stages); a crowd arriving while the device
    is busy is still batched."""
    wrap_backend(delay=0.05)

    async def main() -> tuple[float, str]:
        async with serving(settings(test_store, batch_policy=policy, max_queue_delay_ms=1500)) as c:
            t0 = time.monotonic()
            assert (await post(c, **BOX)).status_code == 200
            lone = time.monotonic() - t0
            crowd = await asyncio.gather(*(post(c, **BOX) for _ in range(12)))
            assert [r.status_code for r in crowd] == [200] * 12
            return lone, (await c.get("/metrics")).text

    lone, text = run(main())
    if policy == "greedy":
        assert lone < 1.0, f"a lone request waited {lone:.2f} s"
        batches = metric(text, "wingmark_batch_size_count")
        assert metric(text, "wingmark_batch_size_sum") == 13 and batches < 13  # some batch held > 1
    else:
        assert lone >= 3.0  # 1.5 s at each stage's batcher


def test_a_requests_views_are_checked_against_max_views(test_store: Path) -> None:
    """``views`` in the query, JSON and multipart: 1, 5 or 9 up to WINGMARK_MAX_VIEWS, else 422; the
    response and /v1/models say what ran and what may be asked for."""

    async def main() -> None:
        async with serving(settings(test_store, max_views=5)) as c:
            assert (await c.get("/v1/models")).json()["max_views"] == 5
            one = (await post(c, **BOX)).json()
            five = (await post(c, **BOX, views=5)).json()
            assert one["views"] == 1 and five["views"] == 5
            assert one["faces"][0]["landmarks"] != five["faces"][0]["landmarks"]
            body = assert_problem(await post(c, **BOX, views=9), 422, "invalid-parameters")
            assert "[1, 5]" in body["detail"]
            assert_problem(await post(c, **BOX, views=4), 422, "invalid-parameters")
            assert_problem(await post(c, **BOX, views="five"), 422, "invalid-parameters")
            b64 = base64.b64encode(FACE).decode()
            r = await c.post("/v1/landmarks", json={"image": b64, "boxes": [[20, 20, 140, 140]], "views": 5})
            assert r.json()["faces"] == five["faces"]
            r = await c.post(
                "/v1/landmarks", json={"image": b64, "boxes": [[20, 20, 140, 140]], "views": 2.5}
            )
            assert_problem(r, 422, "invalid-parameters")
            r = await c.post("/v1/landmarks", files={"image": ("f.png", FACE, "image/png")},
                             data={"boxes": "[[20, 20, 140, 140]]", "views": "5"})  # fmt: skip
            assert r.json()["faces"] == five["faces"]
            text = (await c.get("/metrics")).text  # 1 face at 1 view, 3 at 5; refused requests count none
            assert metric(text, "wingmark_faces_by_views_total", views="1") == 1
            assert metric(text, "wingmark_faces_by_views_total", views="5") == 3
            assert metric(text, "wingmark_faces_by_views_total", views="9") == 0

    run(main())


def test_a_requests_refine_is_checked_and_reported(test_store: Path) -> None:
    """``refine`` in the query, JSON and multipart: never, detector or always, else 422; the response's
    ``refined`` says whether the faces ran the cascade a second time."""

    async def main() -> None:
        async with serving(settings(test_store)) as c:
            once = (await post(c, **BOX)).json()
            again = (await post(c, **BOX, refine="always")).json()
            assert once["refined"] is False and again["refined"] is True
            assert once["faces"][0]["landmarks"] != again["faces"][0]["landmarks"]
            assert (await post(c, **BOX, refine="detector")).json()["faces"] == once["faces"]  # client boxes
            for bad in ("twice", "ALWAYS"):
                assert_problem(await post(c, **BOX, refine=bad), 422, "invalid-parameters")
            b64 = base64.b64encode(FACE).decode()
            r = await c.post(
                "/v1/landmarks", json={"image": b64, "boxes": [[20, 20, 140, 140]], "refine": "always"}
            )
            assert r.json()["faces"] == again["faces"] and r.json()["refined"] is True
            r = await c.post(
                "/v1/landmarks", json={"image": b64, "boxes": [[20, 20, 140, 140]], "refine": True}
            )
            assert_problem(r, 422, "invalid-parameters")
            r = await c.post("/v1/landmarks", files={"image": ("f.png", FACE, "image/png")},
                             data={"boxes": "[[20, 20, 140, 140]]", "refine": "always"})  # fmt: skip
            assert r.json()["faces"] == again["faces"]

    run(main())


@pytest.mark.parametrize("pipeline", [True, False])
def test_requests_with_different_views_share_batches(
    test_store: Path, wrap_backend: Callable[..., None], pipeline: bool
) -> None:
    """A crowd asking for 1, 5 and 9 views while the device is busy: batched together (at each stage's
    batcher, or the whole cascade's), each request gets the answer it gets alone."""
    wrap_backend(delay=0.05)
    asked = [1, 5, 9] * 4

    async def main() -> tuple[list[Any], list[Any], str]:
        async with serving(settings(test_store, cascade_pipeline=pipeline)) as c:
            alone = [(await post(c, **BOX, views=v)).json() for v in (1, 5, 9)]
            crowd = await asyncio.gather(*(post(c, **BOX, views=v) for v in asked))
            return alone, [r.json() for r in crowd], (await c.get("/metrics")).text

    alone, crowd, text = run(main())
    for v, body in zip(asked, crowd, strict=True):
        assert body["views"] == v
        assert body["faces"] == alone[[1, 5, 9].index(v)]["faces"]
    assert len({str(a["faces"]) for a in alone}) == 3
    assert metric(text, "wingmark_batch_size_count") < metric(text, "wingmark_batch_size_sum")


@pytest.fixture(scope="module")
def int8_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test-ibug68@1 and its variant test-ibug68-int8@1 (a real ONNX model; the selection is tested)."""
    from tests.service.modelgen import publish_test_model

    root = tmp_path_factory.mktemp("int8-store")
    publish_test_model(root, "ibug68")
    publish_test_model(root, "ibug68", name="test-ibug68-int8")
    return root


@pytest.mark.parametrize(
    ("flags", "precision", "expected"),
    [
        ({"avx2", "avx512_vnni"}, "auto", ("test-ibug68-int8", "int8", "avx512_vnni")),
        ({"avx2"}, "auto", ("test-ibug68", "float", "no int8 dot-product unit")),
        ({"avx2", "amx_int8"}, "float", ("test-ibug68", "float", "precision setting is float")),
    ],
)
def test_the_service_runs_int8_on_int8_cpus_and_says_why(
    int8_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: set[str],
    precision: str,
    expected: tuple[str, str, str],
) -> None:
    monkeypatch.setattr(service.models, "cpu_flags", lambda: frozenset(flags))

    async def main() -> None:
        async with serving(settings(int8_store, precision=precision)) as c:
            (info,) = (await c.get("/v1/models")).json()["models"]
            name, prec, why = expected
            assert (info["name"], info["precision"], info["float_model"]) == (name, prec, "test-ibug68")
            assert why in info["precision_reason"] and info["default_for_scheme"]
            # asked for by the float name or by scheme, the request runs the model chosen
            for params in ({"model": "test-ibug68"}, {"scheme": "ibug68"}):
                r = await post(c, **BOX, **params)
                assert r.status_code == 200 and r.json()["model"]["name"] == name

    run(main())
