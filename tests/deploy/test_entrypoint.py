"""docker/entrypoint.sh: `docker run IMAGE [COMMAND ARGS...]` runs `wingmark COMMAND ARGS...` (default
`serve`), with arguments passed through unchanged."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER

ENTRYPOINT = DOCKER / "entrypoint.sh"


@pytest.fixture()
def fake_wingmark(tmp_path: Path) -> dict[str, str]:
    """A `wingmark` on PATH that prints one argument per line."""
    script = tmp_path / "wingmark"
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return env


def entry(env: dict[str, str], *args: str) -> list[str]:
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_default_command_is_serve(fake_wingmark: dict[str, str]) -> None:
    assert entry(fake_wingmark) == ["serve"]


def test_arguments_pass_through_unchanged(fake_wingmark: dict[str, str]) -> None:
    args = ["build-engine", "cnn67-ibug68", "--max-batch", "32", "a b", "--json=/tmp/x y.json"]
    assert entry(fake_wingmark, *args) == args


def test_script_is_executable_and_posix_sh() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True).returncode == 0
