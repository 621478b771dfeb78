"""``wingmark pose-eval`` on a handful of faces: the report's shape and the solver's accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from model_store.store import DEFAULT_MODELS
from tools.studies.pose_eval import main


def test_pose_eval_writes_the_report(tmp_path: Path) -> None:
    out, plot = tmp_path / "pose.json", tmp_path / "pose.png"
    assert main(["--num", "8", "--seed", "3", "--out", str(out), "--plot", str(plot)]) == 0
    report = json.loads(out.read_text())
    assert report["faces"] == 8 and plot.stat().st_size > 5_000
    for kind in ("solver_only", "end_to_end"):
        assert set(report[kind]) == {"ibug68", "aflw19"}
        for summary in report[kind].values():
            assert set(summary["mae_deg"]) == {"yaw", "pitch", "roll"}
            assert sum(b["n"] for b in summary["by_abs_yaw"]) == 8
    assert max(report["solver_only"]["ibug68"]["mae_deg"].values()) < 8
    assert report["end_to_end"]["ibug68"]["model"].startswith(DEFAULT_MODELS["ibug68"] + "@")


def test_solver_only_needs_no_model(tmp_path: Path) -> None:
    out = tmp_path / "pose.json"
    assert main(["--num", "4", "--solver-only", "--out", str(out), "--plot", ""]) == 0
    report = json.loads(out.read_text())
    assert "end_to_end" not in report and report["solver_only"]["aflw19"]["mae_deg"]["roll"] < 5
