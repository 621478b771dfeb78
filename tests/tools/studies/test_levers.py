"""wingmark data levers: each variant changes only its lever; the report reads finished evaluations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tools.studies.levers import CONFIGS, LEVERS, lever_configs, summarise, write_report


def test_each_lever_variant_changes_only_its_lever(tmp_path: Path) -> None:
    base = yaml.safe_load((CONFIGS / "cnn67_v3_ibug68.yaml").read_text())
    cfgs = lever_configs(base, 77, tmp_path)
    assert tuple(cfgs) == LEVERS
    parts = {k: {p["name"]: p for p in c["data"]["train"]["parts"]} for k, c in cfgs.items()}
    # the control: kept faces only, ~40 frames per filmed person, paper augmentation
    assert set(parts["2.0.0-data"]) == {"synthetic", "real"}
    assert parts["2.0.0-data"]["real"]["max_per_identity"] == 40 and not parts["2.0.0-data"]["real"]["loose"]
    assert "kinds" not in parts["2.0.0-data"]["real"]
    # all frames: stills + every video frame (capped), still strict
    assert parts["+all-frames"]["real_video"]["kinds"] == ["video"]
    assert not parts["+all-frames"]["real"]["loose"] and not parts["+all-frames"]["real_video"]["loose"]
    # point weights: the recipe's data exactly
    assert cfgs["+point-weights"]["data"]["train"] == base["data"]["train"]
    assert cfgs["all-levers"]["data"]["train"] == base["data"]["train"]
    assert parts["+box-aug"] == parts["2.0.0-data"]
    for name, cfg in cfgs.items():
        wide = name in {"+box-aug", "all-levers"}
        assert (cfg["stage1"]["augment"] == base["stage1"]["augment"]) is wide
        assert (cfg["stage1"]["augment"] is None) is not wide
        assert cfg["stage1"]["max_steps"] == 77 and cfg["stage2"] == {"enabled": False}
        assert cfg["stage1"]["pretrained"] == base["stage1"]["pretrained"] and cfg["stage1"]["freeze_bn"]
        assert cfg["data"]["val"] == base["data"]["val"] and cfg["eval"] == base["eval"]
        assert cfg["stage1"]["optim"] == base["stage1"]["optim"] and cfg["seed"] == base["seed"]
    assert len({c["out_dir"] for c in cfgs.values()}) == len(LEVERS)


def _eval(nme: float, yaw: dict[str, float] | None = None) -> dict[str, Any]:
    stage1: dict[str, Any] = {"overall": {"n": 10, "nme": nme}}
    if yaw:
        stage1["yaw"] = {k: {"n": 5, "nme": v} for k, v in yaw.items()}
    return {"stage1": stage1}


def test_report_shows_tight_and_hog_box_figures_and_their_ratio(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "plus_box-aug"
    for sub, nme in (("", 0.05), ("eval_real_test", 0.04), ("eval_real_test_hog", 0.042)):
        (run / sub).mkdir(parents=True, exist_ok=True)
        ev = _eval(nme, {"|yaw| 60-90": 0.2} if not sub else None)
        (run / sub / "eval.json").write_text(json.dumps(ev))
    rows = summarise(tmp_path / "runs", {"+box-aug": {"rc": 0, "train_s": 120.0, "log": "x"}})
    report = {"scheme": "ibug68", "base_config": "b.yaml", "steps": 5, "wall_s": 1.0, "variants": rows}
    write_report(report, tmp_path / "docs")
    md = (tmp_path / "docs" / "data_ablation_levers_ibug68.md").read_text()
    assert "| +box-aug | 5.00 | 20.00 | 4.00 | 4.20 | 1.05 | 2.0 |" in md
    assert json.loads((tmp_path / "docs" / "data_ablation_levers_ibug68.json").read_text())["steps"] == 5
    assert (tmp_path / "docs" / "img" / "data_ablation_levers_ibug68.png").stat().st_size > 1000
