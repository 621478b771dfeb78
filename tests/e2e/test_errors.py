"""End to end: every error the API documents, as RFC 9457 problem+json from the real service."""

from __future__ import annotations

import base64
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import E2E_SETTINGS, Server, start_server
from tests.e2e.helpers import assert_problem, landmarks, metric, post_json, post_multipart, post_raw
from tests.service.images import bomb_png, encode, gradient, truncated

FACE = encode(np.asarray(np.random.default_rng(0).integers(0, 255, (200, 240, 3)), np.uint8), "JPEG")


@pytest.mark.parametrize(
    "data",
    [
        b"definitely not an image",
        truncated(encode(gradient(320, 240), "JPEG"), 0.3),
        b"\x89PNG\r\n\x1a\n" + bytes(64),
    ],
    ids=["garbage", "truncated-jpeg", "broken-png"],
)
def test_undecodable_image_is_400(test_server: Server, data: bytes) -> None:
    with test_server.client() as c:
        body = assert_problem(post_raw(c, data, "image/jpeg", box="1,1,50,50"), 400, "invalid-image")
    assert body["title"] and body["detail"] and body["request_id"]


def test_bad_base64_and_malformed_bodies_are_400(test_server: Server) -> None:
    with test_server.client() as c:
        assert_problem(c.post("/v1/landmarks", json={"image": "@@not base64@@"}), 400, "invalid-image")
        assert_problem(c.post("/v1/landmarks", json={"picture": "abc"}), 400, "invalid-request")
        r = c.post("/v1/landmarks", content=b"{oops", headers={"content-type": "application/json"})
        assert_problem(r, 400, "invalid-request")
        r = c.post("/v1/landmarks", files={"photo": ("x.jpg", FACE, "image/jpeg")})
        assert_problem(r, 400, "invalid-request")
        assert_problem(post_raw(c, b"", "image/jpeg"), 400, "invalid-image")


@pytest.mark.parametrize(
    "boxes",
    ["[[100, 100, 50, 150]]", "[[1, 2, 3]]", "not json", '[["a", 1, 2, 3]]', "[[500, 500, 600, 600]]",
     "[" + ",".join(["[1, 1, 20, 20]"] * 33) + "]"],
    ids=["inverted", "three-numbers", "not-json", "strings", "outside-image", "too-many"],
)  # fmt: skip
def test_invalid_boxes_are_400(test_server: Server, boxes: str) -> None:
    with test_server.client() as c:
        assert_problem(post_raw(c, FACE, boxes=boxes), 400, "invalid-boxes")
        assert_problem(post_multipart(c, FACE, boxes=boxes), 400, "invalid-boxes")


def test_too_large_body_and_too_many_pixels_are_413(test_server: Server) -> None:
    limit = int(E2E_SETTINGS["max_request_bytes"])  # type: ignore[call-overload]
    with test_server.client() as c:
        assert_problem(post_raw(c, FACE + bytes(limit), "image/jpeg"), 413, "request-too-large")
        # A body without Content-Length (chunked upload) is cut off while it streams.
        chunks = iter([FACE, bytes(limit // 2), bytes(limit // 2 + 10)])
        r = c.post("/v1/landmarks", content=chunks, headers={"content-type": "image/jpeg"})
        assert_problem(r, 413, "request-too-large")
        bomb = bomb_png(30000, 30000)
        assert len(bomb) < 100_000
        assert_problem(post_raw(c, bomb, "image/png", box="1,1,9,9"), 413, "image-too-large")
        assert c.get("/healthz").status_code == 200


def test_unsupported_types_are_415(test_server: Server) -> None:
    with test_server.client() as c:
        assert_problem(post_raw(c, b"hello", "text/plain"), 415, "unsupported-media-type")
        assert_problem(post_raw(c, b"<svg/>", "image/svg+xml"), 415, "unsupported-media-type")
        ico = encode(gradient(32, 32), "ICO")
        assert_problem(
            post_raw(c, ico, "application/octet-stream", box="1,1,9,9"), 415, "unsupported-media-type"
        )


def test_bad_parameters_are_422(test_server: Server) -> None:
    with test_server.client() as c:
        body = assert_problem(post_raw(c, FACE, max_faces=0), 422, "invalid-parameters")
        assert body["errors"]
        assert_problem(post_raw(c, FACE, scheme="wflw98"), 422, "invalid-parameters")
        assert_problem(post_json(c, FACE, max_faces="many"), 422, "invalid-parameters")
        assert_problem(post_json(c, FACE, scheme="wflw98"), 422, "invalid-parameters")
        assert_problem(post_json(c, FACE, colour="blue"), 422, "invalid-parameters")
        assert_problem(post_multipart(c, FACE, max_faces=1000), 422, "invalid-parameters")
        assert_problem(post_raw(c, FACE, views=4), 422, "invalid-parameters")
        assert_problem(post_json(c, FACE, views="all"), 422, "invalid-parameters")
        assert_problem(post_multipart(c, FACE, views=0), 422, "invalid-parameters")
        assert_problem(post_raw(c, FACE, refine="twice"), 422, "invalid-parameters")
        assert_problem(post_json(c, FACE, refine=1), 422, "invalid-parameters")
        assert_problem(post_raw(c, FACE, model="no-such-model"), 422, "unknown-model")
        assert_problem(post_raw(c, FACE, model="test-ibug68", scheme="aflw19"), 422, "invalid-parameters")
        assert_problem(post_raw(c, FACE, model="../../etc"), 422, "unknown-model")


def test_queue_full_is_429_with_retry_after(test_server: Server) -> None:
    limit = int(E2E_SETTINGS["queue_limit"])  # type: ignore[call-overload]
    boxes = [[1 + i, 1, 60 + i, 60] for i in range(limit + 1)]
    with test_server.client() as c:
        r = post_json(c, FACE, boxes=boxes)
        assert_problem(r, 429, "queue-full")
        assert int(r.headers["retry-after"]) >= 1
        assert 'wingmark_rejected_requests_total{reason="queue_full"}' in c.get("/metrics").text


def test_passed_deadline_is_504(test_server: Server) -> None:
    big = encode(gradient(4000, 4000), "PNG")  # 16 MP: decoding alone takes far longer than 10 ms
    with test_server.client() as c:
        assert_problem(
            post_raw(c, big, "image/png", deadline_ms=10, box="1,1,99,99"), 504, "deadline-exceeded"
        )
        assert_problem(
            post_raw(c, big, "image/png", deadline_ms=5, box="1,1,99,99"), 422, "invalid-parameters"
        )
        assert post_raw(c, big, "image/png", box="1,1,99,99").status_code == 200


def test_unknown_route_is_problem_json(test_server: Server) -> None:
    with test_server.client() as c:
        r = c.get("/v2/nothing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "urn:wingmark:problem:not-found"


def test_bad_requests_never_disturb_good_ones(test_server: Server) -> None:
    bad_inputs = [
        (b"junk", "image/png", {}),
        (truncated(FACE, 0.5), "image/jpeg", {"box": "1,1,50,50"}),
        (bomb_png(), "image/png", {}),
        (FACE, "image/jpeg", {"boxes": "[[3,3,1,1]]"}),
    ]
    with test_server.client() as c:
        reference = landmarks(post_raw(c, FACE, box="20,20,180,180"))[0]

        def good(_: int) -> httpx.Response:
            return post_raw(c, FACE, box="20,20,180,180")

        def bad(i: int) -> httpx.Response:
            data, ctype, params = bad_inputs[i % len(bad_inputs)]
            return post_raw(c, data, ctype, **params)

        with ThreadPoolExecutor(12) as pool:
            goods = [pool.submit(good, i) for i in range(24)]
            bads = [pool.submit(bad, i) for i in range(24)]
            good_responses = [f.result() for f in goods]
            bad_statuses = {f.result().status_code for f in bads}
        assert bad_statuses <= {400, 413}
        for r in good_responses:
            np.testing.assert_allclose(landmarks(r)[0], reference, atol=0.011)
        assert c.get("/healthz").status_code == 200


def test_not_ready_is_503(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, {"model_root": tmp_path / "empty-store", "detector": "none"}, wait_ready=False
    )
    try:
        with server.client() as c:
            assert c.get("/healthz").status_code == 200
            r = c.get("/readyz")
            assert r.status_code == 503 and r.json()["type"] == "urn:wingmark:problem:not-ready"
            r = post_raw(c, FACE, box="1,1,50,50")
            assert_problem(r, 503, "not-ready")
            assert int(r.headers["retry-after"]) > 0
            empty: dict[str, object] = {
                "models": [],
                "detector": None,
                "refine": "detector",
                "views": 1,
                "max_views": 9,
            }
            assert c.get("/v1/models").json() == empty
    finally:
        server.stop()


def test_graceful_shutdown_finishes_admitted_requests(tmp_path: Path, e2e_store: Path) -> None:
    """SIGTERM while 4 requests are in flight: all 4 are answered 200, then the process exits.

    The real service, with every batch made 1.5 s slower (tests/reliability/faulty.py), so that the
    requests are certainly still in flight when the signal arrives; the test checks that they were
    (admitted before the signal, answered after it) and fails otherwise.
    """
    settings = dict(
        E2E_SETTINGS, model_root=e2e_store, models="test-ibug68", log_level="info", detector="none",
        fault_delay_ms=1500,
    )  # fmt: skip
    server = start_server(tmp_path, settings, module="tests.reliability.faulty")
    payload = base64.b64encode(encode(gradient(320, 240), "PNG")).decode()
    results: list[tuple[int, float]] = []  # (status, monotonic time the answer arrived)

    def call() -> None:
        with server.client() as c:
            r = c.post("/v1/landmarks", json={"image": payload, "boxes": [[40, 40, 200, 200]]})
            results.append((r.status_code, time.monotonic()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    in_flight = 0.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until all 4 are admitted (the /metrics call is the 5th)
        in_flight = metric(httpx.get(server.url + "/metrics").text, "wingmark_requests_in_flight")
        if in_flight >= 5:
            break
        time.sleep(0.02)
    sent = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    code = server.stop()
    logs = server.logs()
    assert in_flight >= 5, f"only {in_flight - 1:.0f} of 4 requests were in flight at SIGTERM"
    assert [status for status, _ in results] == [200] * 4, logs
    assert all(at > sent for _, at in results), "a request was answered before SIGTERM: none was in flight"
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in logs
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/healthz", timeout=2)
