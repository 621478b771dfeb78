"""Start the real service (``python -m tools.cli serve`` -> uvicorn) on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model_store.store import DEFAULT_MODELS, ModelStore
from tests.service.modelgen import publish_test_model
from tools.net import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    kind: str = "test-models"

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kw)  # type: ignore[arg-type]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait (uvicorn shuts down gracefully, then re-raises the signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    tmp: Path, settings: dict[str, object], *, wait_ready: bool = True, module: str = "tools.cli"
) -> Server:
    """``python -m module serve`` (module: the service's CLI, or a test wrapper such as
    tests.reliability.faulty) on a free port, with ``settings`` as WINGMARK_* variables."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINGMARK_")}
    env.update({"WINGMARK_HOST": "127.0.0.1", "WINGMARK_PORT": str(port), "OMP_NUM_THREADS": "1",
                "WINGMARK_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})  # fmt: skip
    env.update({f"WINGMARK_{k.upper()}": str(v) for k, v in settings.items()})
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *(["serve"] if module == "tools.cli" else [])],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log, env)
    deadline = time.monotonic() + 90
    path = "/readyz" if wait_ready else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in 90 s:\n{server.logs()}")


@pytest.fixture(scope="session")
def e2e_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e-store")
    publish_test_model(root, "ibug68")
    publish_test_model(root, "aflw19")
    return root


# Settings of the main e2e server: small limits so that each error path is reachable with small files.
E2E_SETTINGS: dict[str, object] = {
    "batch_policy": "timed",  # batches of the tiny test models form reliably only with a wait
    "max_queue_delay_ms": 25,
    "max_batch_size": 16,
    "queue_limit": 24,
    "max_faces": 32,
    # one turn holds every face of a request (up to max_faces), so that one request can fill the queue
    # (test_queue_full_is_429_with_retry_after); turns of fewer faces are tested in tests/service
    "crop_chunk_faces": 32,
    "max_request_bytes": 3_000_000,
    "max_image_pixels": 20_000_000,
    "decode_max_side": 1024,
    "decode_threads": 2,
}


@pytest.fixture(scope="session")
def test_server(e2e_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with the tests' own two-stage ONNX models (always available)."""
    # the test models answer a fixed mean face inside the crop, not the face: a second pass from their
    # points (WINGMARK_REFINE) would only shrink it; the default-models server runs the default setting
    settings = dict(E2E_SETTINGS, model_root=e2e_store, models="test-ibug68,test-aflw19", refine="never")
    srv = start_server(tmp_path_factory.mktemp("e2e"), settings)
    yield srv
    code = srv.stop()
    assert code in (0, -signal.SIGTERM), srv.logs()


def start_default_models_server(tmp: Path) -> Server:
    """The service with the embedded default models (what ``make serve`` serves); skips the test
    where they are not in model_store/models."""
    store = ModelStore(REPO / "model_store" / "models")
    missing = [m for m in DEFAULT_MODELS.values() if not store.list_versions(m)]
    if missing:
        pytest.skip(f"the default models are not in model_store/models yet: {missing}")
    settings = dict(E2E_SETTINGS, model_root=store.root, models=",".join(DEFAULT_MODELS.values()))
    srv = start_server(tmp, settings)
    srv.kind = "default-models"
    return srv


@pytest.fixture(scope="module", params=["test-models", "default-models"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with the test models, and again with the embedded default models where they exist."""
    if request.param == "test-models":
        yield request.getfixturevalue("test_server")
        return
    srv = start_default_models_server(tmp_path_factory.mktemp("e2e"))
    yield srv
    code = srv.stop()
    assert code in (0, -signal.SIGTERM), srv.logs()
