"""``wingmark data bench`` on the committed real-face fixture (tests/fixtures/real), published models."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "real"


def test_bench_runs_both_default_models_per_source_and_stage():
    from tools.studies.real_bench import DEFAULT_MODELS, _table, bench_models

    report = bench_models(FIXTURE, list(DEFAULT_MODELS), split="test")
    assert report["faces"] == 2 and report["faces_per_source"] == {"beta": 2}
    assert report["reference_mediapipe_vs_dlib"]["all"]["nme"] == pytest.approx((0.052 + 0.027) / 2)
    for name, scheme in (("cnn67-ibug68@1.0.0", "ibug68"), ("cnn67-aflw19@1.0.0", "aflw19")):
        entry = report["models"][name]
        assert entry["scheme"] == scheme and entry["num_stages"] == 2
        s1, s2 = entry["stage1"]["all"]["nme"], entry["cascade_stage2"]["all"]["nme"]
        assert 0.0 < s1 < 1.0 and 0.0 < s2 < 1.0 and s1 != s2  # stage 2 really ran and moved points
        assert entry["stage1"]["beta"]["faces"] == 2
        assert set(entry["from_dlib_box"]) == {"stage1", "cascade_stage2"}
        assert entry["from_dlib_box"]["stage1"]["all"]["faces"] == 2
        raw = entry["from_raw_dlib_box_as_client_box"]["cascade_stage2"]["all"]["nme"]
        assert raw != entry["from_dlib_box"]["cascade_stage2"]["all"]["nme"]  # no calibration applied
    regions = report["models"]["cnn67-ibug68@1.0.0"]["regions"]["stage1"]
    assert set(regions) == {"jaw", "brows", "nose", "eyes", "mouth"} and all(v > 0 for v in regions.values())
    table = _table(report)
    assert "cnn67-aflw19@1.0.0 (aflw19) | cascade_stage2" in table
