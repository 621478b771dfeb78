"""End to end: the Python clients, ``wingmark predict --url`` and ``wingmark bench`` on the real service."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.settings import Settings
from tests.e2e.conftest import REPO, Server
from tools.client import AsyncLandmarkClient, LandmarkClient, WingmarkAPIError

FACE_BOX = [150.0, 140.0, 350.0, 360.0]


def test_sync_client(test_server: Server, photos: Path) -> None:
    with LandmarkClient(test_server.url) as client:
        assert client.healthy() and client.ready()
        assert {m["name"] for m in client.models()} == {"test-ibug68", "test-aflw19"}
        result = client.landmarks(photos / "cage.jpg", boxes=[FACE_BOX], scheme="aflw19")
        assert result["faces"][0]["box"] == FACE_BOX and len(result["faces"][0]["landmarks"]) == 19
        viewed = client.landmarks(photos / "cage.jpg", boxes=[FACE_BOX], scheme="aflw19", views=5)
        assert viewed["views"] == 5 and result["views"] == 1 and viewed["faces"] != result["faces"]
        detected = client.landmarks(str(photos / "cage.jpg"))
        assert detected["box_source"] == Settings().detector and len(detected["faces"]) == 1
        with pytest.raises(WingmarkAPIError) as info:
            client.landmarks(b"not an image")
        assert info.value.status == 400 and info.value.type == "urn:wingmark:problem:invalid-image"
    assert not LandmarkClient("http://127.0.0.1:9").healthy()


def test_async_client(test_server: Server, photos: Path) -> None:
    data = (photos / "cage.jpg").read_bytes()

    async def main() -> list[dict[str, object]]:
        async with AsyncLandmarkClient(test_server.url) as client:
            assert await client.ready() and await client.healthy()
            assert len(await client.models()) == 2
            return list(await asyncio.gather(*(client.landmarks(data, boxes=[FACE_BOX]) for _ in range(6))))

    results = run_async(main())
    first = np.asarray(results[0]["faces"][0]["landmarks"])  # type: ignore[index]
    for r in results:
        np.testing.assert_allclose(np.asarray(r["faces"][0]["landmarks"]), first, atol=0.011)  # type: ignore[index]


def run_async(coro: object) -> list[dict[str, object]]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def wingmark(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_predict_against_a_running_service(test_server: Server, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "drawn.png"
    photo, env = str(photos / "audrey.jpg"), test_server.env
    proc = wingmark("predict", photo, "--url", test_server.url, "--json", "--draw", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    assert result["box_source"] == Settings().detector and len(result["faces"]) == 1
    assert out.is_file() and out.stat().st_size > 1000
    proc = wingmark("predict", photo, "--url", test_server.url, "--json", "--views", "9", env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["views"] == 9, proc.stderr
    proc = wingmark("predict", photo, "--url", test_server.url, "--box", "1,2,3", env=env)
    assert proc.returncode == 2 and "x1,y1,x2,y2" in proc.stderr


def test_bench_writes_a_report(test_server: Server, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    photo, env = str(photos / "cage.jpg"), test_server.env
    options = ["--requests", "12", "--concurrency", "1,4", "--warmup", "2", "--out", str(out)]
    proc = wingmark("bench", "--url", test_server.url, "--image", photo, *options, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    runs = {(r["mode"], r["concurrency"]): r for r in report["runs"]}
    assert set(runs) == {("detector", 1), ("detector", 4), ("client_boxes", 1), ("client_boxes", 4)}
    for run in runs.values():
        assert run["ok"] == 12 and run["statuses"] == {"200": 12}
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert run["faces_per_s"] > 0 and run["faces_per_request"] == 1.0
        assert set(run["server_mean_ms"]) == {"decode", "detect", "queue", "inference", "total"}
        assert run["views"] == [1]  # the service's setting
    assert len(report["box"]) == 4 and "p50" in proc.stdout
    assert report["machine"]["cpu"]["model"] and report["views"] is None
    options = ["--requests", "4", "--concurrency", "2", "--warmup", "1", "--mode", "client_boxes"]
    proc = wingmark("bench", "--url", test_server.url, "--image", photo, *options, "--views", "9",
                    "--out", str(out), env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["views"] == 9 and [r["views"] for r in report["runs"]] == [[9]]
    refused = wingmark("bench", "--url", "http://example.com:8000", "--image", photo, env=env)
    assert refused.returncode == 2 and "refusing" in refused.stderr
