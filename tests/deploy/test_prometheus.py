"""docker/prometheus: promtool validates the scrape config and the alert rules, runs the rules' unit
tests (alerts.test.yml), and the rules query only metrics and labels the service exports."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import (
    AUTO_LABELS,
    COMPOSE_FILE,
    PROMETHEUS_DIR,
    exported_metrics,
    promql_metric_names,
    promql_selector_labels,
    run,
)


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_config_is_valid(promtool: str) -> None:
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # alerts.yml is found beside the config


def test_rules_are_valid(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_specified(promtool: str) -> None:
    result = run([promtool, "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert tested == {rule["alert"] for rule in rules()}


def test_rules_query_exported_metrics_and_labels() -> None:
    exported = exported_metrics()
    for rule in rules():
        expr = rule["expr"]
        assert promql_metric_names(expr) <= set(exported), (rule["alert"], expr)
        for metric, label in promql_selector_labels(expr):
            assert label in exported[metric] | AUTO_LABELS, (rule["alert"], metric, label)


def test_scrape_target_is_the_service_on_the_compose_network() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "wingmark"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    # The DNS name resolves to the GPU service by its name and to the CPU service by its alias.
    assert sd["names"] == ["wingmark"] and "wingmark" in compose
    assert "wingmark" in compose["wingmark-cpu"]["networks"]["default"]["aliases"]
    assert sd["port"] == int(compose["wingmark"]["environment"]["WINGMARK_PORT"])
    mounts = dict(m.split(":")[:2] for m in compose["prometheus"]["volumes"] if m.startswith("./"))
    assert mounts["./docker/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # rule_files are resolved beside the config file, inside the container too.
    assert mounts["./docker/prometheus/alerts.yml"] == "/etc/prometheus/" + config["rule_files"][0]


def test_service_exposition_passes_promtool_lint(promtool: str) -> None:
    """What the dashboard and alerts read, as the service renders it, passes `promtool check metrics`
    (naming and unit conventions, histogram/counter suffixes)."""
    from service.metrics import Metrics

    metrics = Metrics()
    metrics.http_requests.labels(route="/v1/landmarks", method="POST", status="200").inc()
    metrics.http_duration.labels(route="/v1/landmarks", method="POST").observe(0.02)
    metrics.stage_duration.labels(stage="inference").observe(0.004)
    metrics.model_info.labels(name="cnn67-ibug68", version="1", scheme="ibug68", backend="onnxruntime").set(1)
    metrics.on_batch(8, 0.004)
    text = metrics.render()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not result.stdout.strip() and not result.stderr.strip(), (result.stdout + result.stderr).decode()
