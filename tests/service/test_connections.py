"""Connection limits on real uvicorn (127.0.0.1, both HTTP parsers): a connection whose request head never
completes is closed with 408, an idle keep-alive connection is closed, a flood past limit_concurrency
(connections or requests in flight) is answered 503 problem+json with Retry-After rather than dropped or
answered in plain text, and the open-file limit is raised to fit."""

from __future__ import annotations

import json
import resource
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from service.connections import http_protocol
from service.server import raise_fd_limit
from service.settings import Settings
from tests.service.live import live_server, raw_request

PARSERS = ["h11", "httptools"]


def settings(store: Path, **kw: Any) -> Settings:
    base = {"model_root": store, "models": ["test-ibug68"], "detector": "none", "head_timeout_s": 0.5}
    return Settings(**{**base, **kw})


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit_s} s (got {data[:80]!r})")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def read_response(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """One whole response (head, then Content-Length bytes of body), however the server's writes arrive."""
    sock.settimeout(limit_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the response head was complete: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the response body was complete"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("http", PARSERS)
def test_a_connection_that_sends_nothing_is_closed_with_408(test_store: Path, http: str) -> None:
    with live_server(settings(test_store, uvicorn_http=http)) as live, live.connect() as sock:
        data, waited = read_until_closed(sock, 5.0)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < waited < 3.0


@pytest.mark.parametrize("http", PARSERS)
def test_a_trickled_request_head_gets_no_more_time(test_store: Path, http: str) -> None:
    with live_server(settings(test_store, uvicorn_http=http)) as live, live.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(30):  # one header byte every 0.1 s: never a complete head
                time.sleep(0.1)
                sock.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, _ = read_until_closed(sock, 5.0)
        assert time.monotonic() - started < 3.5
    assert data.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("http", PARSERS)
def test_keep_alive_serves_requests_then_closes_when_idle(test_store: Path, http: str) -> None:
    s = settings(test_store, uvicorn_http=http, timeout_keep_alive_s=1, head_timeout_s=5.0)
    with live_server(s) as live, live.connect() as sock:
        for _ in range(2):  # two requests on one connection, the second after a pause
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = read_response(sock)  # head and body may arrive in separate reads under load
            assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b'{"status":"ok"}')
            time.sleep(0.3)
        data, waited = read_until_closed(sock, 5.0)
    assert data == b"" and waited < 2.0  # closed by the keep-alive timeout, not the 5 s head timeout


def assert_overloaded(answer: bytes) -> dict[str, Any]:
    """``answer`` (a raw HTTP response) is 503 problem+json ``overloaded`` with Retry-After."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 503 "), answer[:200]
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    problem = json.loads(body[: int(headers["content-length"])])
    assert problem["type"] == "urn:wingmark:problem:overloaded" and problem["status"] == 503
    return headers


@pytest.mark.parametrize("http", PARSERS)
def test_past_limit_concurrency_connections_get_503_problem_json(test_store: Path, http: str) -> None:
    s = settings(test_store, uvicorn_http=http, limit_concurrency=4, head_timeout_s=30.0)
    with live_server(s) as live:
        idle = [live.connect() for _ in range(4)]
        try:
            time.sleep(0.1)
            with live.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer, _ = read_until_closed(sock, 5.0)  # answered, then closed
            headers = assert_overloaded(answer)
            assert headers["connection"] == "close"
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        with live.client() as client:
            assert client.get("/healthz").status_code == 200  # the slots came back


@pytest.mark.parametrize("http", PARSERS)
def test_past_limit_concurrency_requests_in_flight_get_503_problem_json(test_store: Path, http: str) -> None:
    # no connection limit here (the protocol's is the tighter one otherwise): the app's own limit alone
    s = settings(test_store, uvicorn_http=http, limit_concurrency=2, head_timeout_s=30.0, body_timeout_s=30.0)
    head_only = raw_request("/v1/landmarks?box=1,1,9,9", b"x" * 10, length=1000)  # body never completes
    with live_server(s, http=http_protocol(http, 30.0)) as live:
        held = [live.connect() for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(head_only)
            time.sleep(0.3)  # both requests are in the route, waiting for their bodies
            with live.connect() as sock:
                sock.sendall(raw_request("/v1/landmarks?box=1,1,9,9", b"not an image"))
                sock.settimeout(5)
                assert_overloaded(sock.recv(65536))
            with live.client() as client:
                assert client.get("/healthz").status_code == 200  # liveness is never limited
                assert (
                    'wingmark_rejected_requests_total{reason="overloaded"} 1.0' in client.get("/metrics").text
                )
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        with live.client() as client:  # the slots came back: the next request reaches the route
            r = client.post("/v1/landmarks", params={"box": "1,1,9,9"}, content=b"not an image",
                            headers={"content-type": "image/png"})  # fmt: skip
            assert r.status_code == 400


def test_the_open_file_limit_is_raised_to_fit_the_connection_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = soft - 64  # start lower than now (always allowed), then ask for more
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        assert raise_fd_limit(low + 16) == low + 16
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (low + 16, hard)
        assert raise_fd_limit(16) == low + 16  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
