"""One module per study: each runs an experiment on the published models or the training recipe and
writes its result as JSON (and markdown / PNG where people read it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_json"]


def write_json(report: Any, path: Path) -> None:
    """A study's report as indented JSON at ``path`` (its folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
