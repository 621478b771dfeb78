"""One module per study: each runs an experiment on the published models or the training recipe and
writes its result as JSON (and markdown / PNG where people read it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_store.schemes import get_scheme

__all__ = ["inter_ocular", "write_json"]


def inter_ocular(points: np.ndarray) -> float:
    """The 68-point scheme's NME normaliser of one face's points [68, 2]: the outer eye corners' distance."""
    return float(get_scheme("ibug68").normaliser_distance(np.asarray(points)[None])[0])


def write_json(report: Any, path: Path) -> None:
    """A study's report as indented JSON at ``path`` (its folder made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
