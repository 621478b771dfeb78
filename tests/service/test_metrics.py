"""Every metric CONTRACT.md names exists, in a registry of its own per Metrics object."""

from __future__ import annotations

from service.metrics import Metrics
from tests.e2e.helpers import metric

CONTRACT = {
    "wingmark_http_requests_total": "counter",
    "wingmark_http_request_duration_seconds": "histogram",
    "wingmark_stage_duration_seconds": "histogram",
    "wingmark_batch_size": "histogram",
    "wingmark_queue_depth": "gauge",
    "wingmark_faces_per_request": "histogram",
    "wingmark_model_info": "gauge",
    "wingmark_rejected_requests_total": "counter",
    "wingmark_batch_failures_total": "counter",
    "wingmark_requests_in_flight": "gauge",
}


def test_contract_metrics_are_defined_with_their_types() -> None:
    text = Metrics().render().decode()
    for name, kind in CONTRACT.items():
        assert f"# TYPE {name} {kind}" in text, name
    for stage in ("decode", "detect", "queue", "inference", "total"):
        assert f'wingmark_stage_duration_seconds_count{{stage="{stage}"}} 0.0' in text
    for reason in ("queue_full", "deadline", "not_ready"):
        assert f'wingmark_rejected_requests_total{{reason="{reason}"}} 0.0' in text


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
