"""docker/nginx.conf (the multi-GPU example's load balancer) run by a real nginx on loopback, with the
replica hostnames pointed at stand-in upstreams: the configuration is valid, it spreads requests over the
replicas, hands a request that one replica sheds (429) or is not ready for (503) to another, and keeps
/metrics off the balancer."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER, find_tool, missing_tool
from tools.net import free_port

NGINX_CONF = DOCKER / "nginx.conf"


@pytest.fixture(scope="module")
def nginx() -> str:
    tool = find_tool("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").exists() else None)
    if tool is None:
        missing_tool("nginx", "apt-get install nginx")
    assert tool is not None
    return tool


class Upstream:
    """A stand-in replica on loopback answering every POST with a fixed status, counting hits."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.hits += 1
                body = b'{"ok": true}'
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def local_config(tmp_path: Path, upstreams: list[Upstream], listen: int) -> Path:
    """docker/nginx.conf with the replicas, the listen address and the log paths pointed at this machine."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"server\s+([\w.-]+):8000", text)
    assert len(servers) == len(upstreams)
    for name, upstream in zip(servers, upstreams, strict=True):
        text = text.replace(f"server {name}:8000", f"server 127.0.0.1:{upstream.port}")
    text = re.sub(r"listen\s+8000;", f"listen 127.0.0.1:{listen};", text)
    text = text.replace("http {", f"http {{\n    access_log {tmp_path}/access.log;", 1)
    text = text.replace("worker_processes auto;", f"worker_processes 1;\npid {tmp_path}/nginx.pid;")
    path = tmp_path / "nginx.conf"
    path.write_text(text)
    return path


def nginx_cmd(nginx: str, tmp_path: Path, conf: Path) -> list[str]:
    return [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")]


def post(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/landmarks", data=b"image", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture()
def balancer(nginx: str, tmp_path: Path) -> Iterator[tuple[int, list[Upstream]]]:
    upstreams = [Upstream(200), Upstream(200)]
    port = free_port()
    conf = local_config(tmp_path, upstreams, port)
    proc = subprocess.Popen([*nginx_cmd(nginx, tmp_path, conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"nginx did not start: {err}")
            time.sleep(0.05)
        yield port, upstreams
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for upstream in upstreams:
            upstream.close()


def test_config_is_valid(nginx: str, tmp_path: Path) -> None:
    upstreams = [Upstream(200), Upstream(200)]
    try:
        conf = local_config(tmp_path, upstreams, free_port())
        result = subprocess.run([*nginx_cmd(nginx, tmp_path, conf), "-t"], capture_output=True, text=True)
    finally:
        for upstream in upstreams:
            upstream.close()
    assert result.returncode == 0, result.stderr


def test_requests_reach_every_replica(balancer: tuple[int, list[Upstream]]) -> None:
    port, upstreams = balancer
    assert [post(port) for _ in range(8)] == [200] * 8
    assert all(u.hits > 0 for u in upstreams), [u.hits for u in upstreams]


@pytest.mark.parametrize("status", [429, 503])
def test_a_shed_request_is_retried_on_another_replica(
    balancer: tuple[int, list[Upstream]], status: int
) -> None:
    port, (busy, free) = balancer
    busy.status = status
    assert [post(port) for _ in range(6)] == [200] * 6
    assert busy.hits > 0 and free.hits == 6


def test_every_replica_shedding_reaches_the_client(balancer: tuple[int, list[Upstream]]) -> None:
    port, upstreams = balancer
    for upstream in upstreams:
        upstream.status = 429
    assert post(port) == 429  # two tries, then the client sees the 429 and backs off


def test_metrics_are_not_served_through_the_balancer(balancer: tuple[int, list[Upstream]]) -> None:
    port, _ = balancer
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 404
