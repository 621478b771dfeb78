"""docker/healthcheck.py (the images' HEALTHCHECK) against a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tests.deploy.conftest import DOCKER
from tools.net import free_port

SCRIPT = DOCKER / "healthcheck.py"


class _Readyz(http.server.BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        code = type(self).status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ready": %s}' % (b"true" if code == 200 else b"false"))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Readyz)
    _Readyz.paths = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def check(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WINGMARK_")}
    clean.update(WINGMARK_PORT=str(port), **env)
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=clean, capture_output=True, text=True, timeout=30
    )


def test_ready_service_is_healthy(server: http.server.HTTPServer) -> None:
    _Readyz.status = 200
    result = check(server.server_address[1])
    assert result.returncode == 0, result.stderr
    assert _Readyz.paths == ["/readyz"]


def test_not_ready_service_is_unhealthy(server: http.server.HTTPServer) -> None:
    _Readyz.status = 503
    result = check(server.server_address[1])
    assert result.returncode == 1
    assert "503" in result.stderr


def test_nothing_listening_is_unhealthy() -> None:
    result = check(free_port())  # a port that was free a moment ago and has no listener now
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_url_override(server: http.server.HTTPServer) -> None:
    _Readyz.status = 200
    port = server.server_address[1]
    assert check(1, WINGMARK_HEALTHCHECK_URL=f"http://127.0.0.1:{port}/readyz").returncode == 0
    assert check(1, WINGMARK_HEALTHCHECK_URL=f"http://127.0.0.1:{port}/missing").returncode == 1
