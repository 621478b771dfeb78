"""Every Prometheus metric of the service, in one registry per app (tests stay isolated).

Names are fixed by CONTRACT.md; dashboards in docker/ query them. Labels never carry
unbounded values: ``route`` is the route template (``/v1/landmarks``), never the raw path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "STAGES", "Metrics"]

# Every value of wingmark_stage_duration_seconds' ``stage`` label (CONTRACT.md lists them): per request
# decode, detect, crop (every stage's crops), queue and inference (summed over the model's stages), map
# (back to image pixels), serialise (the JSON response) and total; per model stage N (1-based; the
# models here have one or two) ``stageN`` (the run of the batch the faces were in) and ``stageN_queue``.
STAGES = (
    "decode", "detect", "crop", "stage1_queue", "stage1", "stage2_queue", "stage2",
    "queue", "inference", "map", "serialise", "total",
)  # fmt: skip
REJECT_REASONS = ("queue_full", "deadline", "not_ready", "client_disconnected", "overloaded")
VIEWS = (
    "1",
    "5",
    "9",
)  # runtime.cascade.VIEWS: a request's views, the label of wingmark_faces_by_views_total

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_FACE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The service's metrics, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "wingmark_http_requests_total", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "wingmark_http_request_duration_seconds", "HTTP request latency by route and method",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_duration = Histogram(
            "wingmark_stage_duration_seconds", "Latency of each stage of a landmark request",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "wingmark_batch_size", "Crops per inference batch (a face's, or its views' at a viewed stage)",
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("wingmark_queue_depth", "Face crops waiting for a batch", registry=r)
        self.faces_per_request = Histogram(
            "wingmark_faces_per_request", "Faces per landmark request", buckets=_FACE_BUCKETS, registry=r
        )
        self.model_info = Gauge(
            "wingmark_model_info",
            "Loaded models (value 1)",
            ["name", "version", "scheme", "backend"],
            registry=r,
        )
        self.rejected = Counter(
            "wingmark_rejected_requests_total", "Requests refused by reason", ["reason"], registry=r
        )
        self.batch_failures = Counter(
            "wingmark_batch_failures_total", "Inference batches that raised", registry=r
        )
        self.in_flight = Gauge("wingmark_requests_in_flight", "Requests being handled", registry=r)
        self.faces_by_views = Counter(
            "wingmark_faces_by_views_total", "Faces landmarked, by their last stage's views", ["views"],
            registry=r,
        )  # fmt: skip
        for stage in STAGES:  # export zero-valued series from the start
            self.stage_duration.labels(stage=stage)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        for views in VIEWS:
            self.faces_by_views.labels(views=views)

    # BatchObserver
    def on_batch(self, size: int, run_s: float) -> None:
        self.batch_size.observe(size)

    def on_failure(self, size: int, error: BaseException) -> None:
        self.batch_failures.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
