"""The application's version: the installed package's metadata (from pyproject.toml at install time),
or pyproject.toml itself when the code runs from a source tree that was never installed."""

from __future__ import annotations

import functools
import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["DISTRIBUTION", "app_version"]

DISTRIBUTION = "wingmark"
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@functools.cache
def app_version() -> str:
    """``wingmark``'s version, e.g. ``0.1.0``; ``0+unknown`` when neither source is there."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"
    return str(project["version"]) if project.get("name") == DISTRIBUTION else "0+unknown"
