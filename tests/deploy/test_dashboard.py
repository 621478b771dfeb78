"""The Grafana dashboard and its provisioning: it queries only metrics the service really exports, with
their real labels, in valid PromQL, and covers what an operator watches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    AUTO_LABELS,
    COMPOSE_FILE,
    DASHBOARD,
    DOCKER,
    exported_metrics,
    promql_metric_names,
    promql_selector_labels,
    run,
)

# Grafana's own variables, replaced by something Prometheus accepts before promtool parses the queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$route": ".*",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]


def variable_queries() -> list[str]:
    out = []
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        out.append(query["query"] if isinstance(query, dict) else str(query))
    return out


def test_every_queried_metric_is_exported_by_the_service() -> None:
    exported = exported_metrics()
    queried: set[str] = set()
    for title, expr in panel_exprs():
        names = promql_metric_names(expr)
        assert names, f"panel {title!r} queries no wingmark metric: {expr}"
        unknown = names - set(exported)
        assert not unknown, f"panel {title!r} queries {sorted(unknown)}, not exported by service/metrics.py"
        queried |= names
    for query in variable_queries():
        assert promql_metric_names(query) <= set(exported), query
    # All the service's families appear somewhere on the dashboard.
    assert queried == set(exported), f"not on the dashboard: {sorted(set(exported) - queried)}"


def test_label_matchers_use_the_metrics_real_labels() -> None:
    exported = exported_metrics()
    for title, expr in panel_exprs():
        for metric, label in promql_selector_labels(expr):
            assert label in exported[metric] | AUTO_LABELS, (
                f"panel {title!r}: {metric} has no label {label!r}"
            )


def test_queries_parse_as_promql(promtool: str, tmp_path: Any) -> None:
    rules = []
    for i, (_, expr) in enumerate(panel_exprs()):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_covers_what_operators_watch() -> None:
    by_title = {title: expr for title, expr in panel_exprs()}
    titles = " | ".join(by_title).lower()
    exprs = [expr for _, expr in panel_exprs()]

    def some(predicate: Any) -> bool:
        return any(predicate(e) for e in exprs)

    assert some(lambda e: "rate(wingmark_http_requests_total" in e), "request rate"
    for q in ("0.5", "0.99"):
        assert some(lambda e, q=q: f"histogram_quantile({q}" in e and "http_request_duration" in e), q
    assert some(lambda e: "wingmark_stage_duration_seconds_bucket" in e and "stage)" in e), "per stage"
    assert some(lambda e: "wingmark_batch_size" in e), "batch size"
    assert some(lambda e: "wingmark_queue_depth" in e), "queue depth"
    assert some(lambda e: "wingmark_rejected_requests_total" in e and "reason" in e), "rejections (429)"
    assert some(lambda e: 'status=~"4..|5.."' in e), "error responses"
    assert some(lambda e: "wingmark_batch_failures_total" in e), "failed batches"
    for word in ("latency", "stage", "batch", "queue", "reject", "error"):
        assert word in titles


def test_layout_has_unique_ids_and_no_overlaps() -> None:
    items = list(panels(dashboard()["panels"]))
    ids = [p["id"] for p in items]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in items:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasources = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for p in panels(dashboard()["panels"]):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == source["uid"], p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == source["uid"]
    providers = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/wingmark.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"])
    assert mounts["./docker/grafana/dashboards"] == folder
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/{DASHBOARD.name}"


@pytest.mark.parametrize("quantile", ["0.5", "0.9", "0.99"])
def test_latency_percentiles_aggregate_buckets_by_le(quantile: str) -> None:
    """histogram_quantile over a sum that drops `le` silently returns nothing: every one keeps it."""
    for title, expr in panel_exprs():
        if f"histogram_quantile({quantile}" in expr:
            assert "sum by (le" in expr, f"panel {title!r}: {expr}"
