"""tools.studies.roll_bench on a few synthetic faces with the published 1.0.0 model: both roll rules
are measured, stage 1 (cropped from the box, no roll) is the same under both, stage 2 is not."""

from __future__ import annotations

import json
from pathlib import Path

from tools.studies.roll_bench import main


def test_roll_bench_compares_the_rules_on_stage_two_only(tmp_path: Path) -> None:
    out = tmp_path / "roll.json"
    assert main(["--model", "cnn67-ibug68", "--version", "1.0.0", "--num", "12", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 12 and sum(report["counts"].values()) == 12
    eyes, blend = report["eyes"], report["blend"]
    assert eyes["stage1_nme"] == blend["stage1_nme"] and eyes["stage1_nme_box"] == blend["stage1_nme_box"]
    assert eyes["stage2_nme_box"]["all"] != blend["stage2_nme_box"]["all"]
    assert 0.0 < eyes["stage2_nme_box"]["all"] < 0.5
