"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import numpy as np

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def post_raw(
    client: httpx.Client, data: bytes, content_type: str = "image/jpeg", **params: Any
) -> httpx.Response:
    return client.post("/v1/landmarks", content=data, headers={"content-type": content_type}, params=params)


def post_multipart(client: httpx.Client, data: bytes, **fields: Any) -> httpx.Response:
    form = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in fields.items()}
    return client.post("/v1/landmarks", files={"image": ("face.jpg", data, "image/jpeg")}, data=form)


def post_json(client: httpx.Client, data: bytes, **keys: Any) -> httpx.Response:
    import base64

    return client.post("/v1/landmarks", json={"image": base64.b64encode(data).decode(), **keys})


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and body["type"] == f"urn:wingmark:problem:{slug}", body
    assert body["instance"] == "/v1/landmarks" or body["instance"].startswith("/")
    return body


def landmarks(response: httpx.Response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text
    return [np.asarray(f["landmarks"], dtype=np.float64) for f in response.json()["faces"]]


def inside(points: np.ndarray, box: list[float], margin: float) -> bool:
    """All points inside ``box`` grown by ``margin`` of its size on every side."""
    x1, y1, x2, y2 = box
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    return bool(
        (points[:, 0] >= x1 - mx).all() and (points[:, 0] <= x2 + mx).all()
        and (points[:, 1] >= y1 - my).all() and (points[:, 1] <= y2 + my).all()
    )  # fmt: skip


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m["name"] != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m["value"])
    return total
