"""tools.studies.gate_threshold: a gated version's threshold moved in its graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.store import ModelStore
from runtime.backends import create_backend
from tools.studies.gate_threshold import with_threshold

GATED = ("faceapi-ibug68", "4.4.0")  # pose-gated at 45 degrees, not flip-averaged: the smaller graphs


def _stage1_outputs(store: ModelStore, x: np.ndarray) -> np.ndarray:
    mv = store.resolve(*GATED)
    store.verify(mv)  # the copy's manifest matches its rewritten files
    return create_backend("onnxruntime", mv, device="cpu", max_batch_size=8, threads=1).run(0, x)


def test_threshold_zero_sends_every_face_to_the_turned_network(tmp_path: Path) -> None:
    """At 0 degrees every crop takes the turned network's output; at 180 none does, which is the
    frontal network alone; the published 45 lies between (on random crops most stay frontal)."""
    source = ModelStore().resolve(*GATED)
    x = np.random.default_rng(0).normal(size=(6, 3, 112, 112)).astype(np.float32)
    published = _stage1_outputs(ModelStore(), x)
    out = {}
    for t in (0.0, 180.0):
        copy = tmp_path / f"t{t:g}"
        assert with_threshold(source.path, copy / GATED[0] / GATED[1], t) == 2  # one constant a stage
        out[t] = _stage1_outputs(ModelStore(copy), x)
        recorded = json.loads((copy / GATED[0] / GATED[1] / "manifest.json").read_text())
        assert recorded["provenance"]["config"]["threshold_deg"] == t
    assert not np.allclose(out[0.0], out[180.0], atol=1e-4)  # two different networks answered
    for row in range(len(x)):  # each published row is one of the two
        assert any(np.allclose(published[row], out[t][row], atol=1e-5) for t in (0.0, 180.0))


def test_a_version_without_a_gate_is_refused(tmp_path: Path) -> None:
    plain = ModelStore().resolve("faceapi-ibug68", "4.3.0")
    with pytest.raises(ValueError, match="not a pose-gated version"):
        with_threshold(plain.path, tmp_path / "copy", 20.0)
