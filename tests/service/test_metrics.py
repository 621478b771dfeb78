"""Every metric CONTRACT.md names exists with its type, in a registry of its own per Metrics object."""

from __future__ import annotations

import re
from pathlib import Path

from service.metrics import Metrics
from tests.e2e.helpers import metric

REPO = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| `(wingmark_[a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|", re.M)


def contract() -> dict[str, tuple[str, str]]:
    """CONTRACT.md's metrics table: name -> (type, labels column)."""
    text = (REPO / "CONTRACT.md").read_text()
    return {m[1]: (m[2], m[3].strip()) for m in _ROW.finditer(text)}


def test_contract_lists_the_metrics_and_docs_api_agrees() -> None:
    names = contract()
    assert len(names) >= 10, names
    documented = set(re.findall(r"^\| `(wingmark_[a-z_]+)` \|", (REPO / "docs" / "api.md").read_text(), re.M))
    assert documented == set(names)


def test_contract_metrics_are_defined_with_their_types() -> None:
    text = Metrics().render().decode()
    exported = {
        n for n in re.findall(r"^# TYPE (wingmark_[a-z_]+) ", text, re.M) if not n.endswith("_created")
    }
    assert exported == set(contract()), "metrics exported but not in CONTRACT.md, or the reverse"
    for name, (kind, labels) in contract().items():
        assert f"# TYPE {name} {kind}" in text, name
        for label, values in re.findall(r"`(\w+)`: ([a-z0-9_, ]+)", labels):  # series exported at zero
            suffix = "_count" if kind == "histogram" else ""
            for value in values.split(", "):
                assert f'{name}{suffix}{{{label}="{value.strip()}"}} 0.0' in text, (name, label, value)


def test_registries_are_isolated_and_observers_record() -> None:
    a, b = Metrics(), Metrics()
    a.on_batch(5, 0.01)
    a.on_batch(1, 0.01)
    a.on_failure(3, RuntimeError("x"))
    a.http_requests.labels("/v1/landmarks", "POST", "200").inc()
    text_a, text_b = a.render().decode(), b.render().decode()
    assert metric(text_a, "wingmark_batch_size_count") == 2 and metric(text_a, "wingmark_batch_size_sum") == 6
    assert metric(text_a, "wingmark_batch_size_bucket", le="1.0") == 1
    assert metric(text_a, "wingmark_batch_failures_total") == 1
    assert metric(text_b, "wingmark_batch_size_count") == 0
    assert metric(text_b, "wingmark_http_requests_total") == 0


def _stage_labels(doc: str) -> list[str]:
    """The ``stage`` values listed in the wingmark_stage_duration_seconds row of a markdown table."""
    row = next(ln for ln in doc.splitlines() if ln.startswith("| `wingmark_stage_duration_seconds` |"))
    values = re.search(r"`stage`: ([a-z0-9_, ]+)", row)
    assert values, row
    return [v.strip() for v in values[1].split(",")]


def test_stage_labels_documented_are_the_labels_a_request_emits(test_store: Path) -> None:
    """A two-stage model, one request with a client box and one through the detector: every stage label
    the service observes is documented in CONTRACT.md and docs/api.md, and every documented one is seen."""
    import asyncio

    import httpx

    from service.app import create_app
    from service.metrics import STAGES
    from service.settings import Settings
    from tests.service.images import encode, gradient

    for doc in (REPO / "CONTRACT.md", REPO / "docs" / "api.md"):
        assert _stage_labels(doc.read_text()) == list(STAGES), doc.name
    settings = Settings(model_root=test_store, models=["test-ibug68"], detector="dlib_hog")
    image = encode(gradient(), "PNG")

    async def main() -> str:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
                for _ in range(500):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.02)
                headers = {"content-type": "image/png"}
                for params in ({"box": "10,10,60,60"}, {}):
                    r = await client.post("/v1/landmarks", content=image, headers=headers, params=params)
                    assert r.status_code == 200, r.text
                return (await client.get("/metrics")).text

    text = asyncio.run(main())
    seen = {
        m[1]
        for m in re.finditer(
            r'^wingmark_stage_duration_seconds_count\{stage="([^"]+)"\} ([\d.e+]+)$', text, re.M
        )
        if float(m[2]) > 0
    }
    assert seen == set(STAGES)
