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
        for label, values in re.findall(r"`(\w+)`: ([a-z_, ]+)", labels):  # series exported at zero
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
