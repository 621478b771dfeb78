"""tools.studies.views: the views' figures gathered from yaw_errors reports, and their cost timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.studies.views import gather, main

SYNTH = {"kind": "synthetic", "num": 6, "seed": 5, "image_size": 256}


def _report(views: int, nme: float) -> dict:
    bin_ = {"n": 2, "nme": nme}
    final = {"all": {"n": 3, "nme": nme}, "|yaw| 0-15": bin_, "|yaw| 60-90": {"n": 0, "nme": 0.0}}
    run = {
        "run": "m@1",
        "stages": ["a", "b"],
        "client_box": "tight",
        "views": views,
        "stage1": {},
        "stage2": final,
    }
    return {"data": SYNTH, "labels": "exact (renderer)", "runs": [run]}


def test_gather_reads_each_sets_final_stage_per_number_of_views(tmp_path: Path) -> None:
    (tmp_path / "val_1.json").write_text(json.dumps(_report(1, 0.0468)))
    (tmp_path / "val_5.json").write_text(json.dumps(_report(5, 0.0450)))
    (tmp_path / "notes.json").write_text("{}")  # not SET_V: skipped
    got = gather(tmp_path, [1, 5])
    assert list(got) == ["val"] and got["val"]["labels"] == "exact (renderer)"
    assert got["val"]["views"]["1"] == {"faces": 3, "nme_percent": 4.68, "per_yaw_bin": {"0-15": 4.68}}
    assert got["val"]["views"]["5"]["nme_percent"] == 4.5
    assert list(gather(tmp_path, [5])["val"]["views"]) == ["5"]
    (tmp_path / "val_9.json").write_text(json.dumps(_report(1, 0.05)))  # named 9, ran with 1
    with pytest.raises(ValueError, match="ran with 1 views"):
        gather(tmp_path, [9])


def test_main_times_each_number_of_views_through_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tools.studies.views.SPEED_SET", SYNTH)
    out = tmp_path / "views.json"
    assert main(["faceapi-ibug68@4.9.0", "--views", "1,5", "--rounds", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["views"] == [1, 5] and "sets" not in report
    speed = report["speed"]
    assert speed["faces"] == 6 and speed["threads"] == 1
    assert speed["cpu"]["model"] and isinstance(speed["cpu"]["flags"], list)  # beside every speed figure
    for n in ("1", "32"):
        assert set(speed["cascade_faces_per_s"][n]) == {"1", "5"}
        assert all(r["median"] > 0 for r in speed["cascade_faces_per_s"][n].values())
    with pytest.raises(SystemExit):
        main(["faceapi-ibug68@4.9.0", "--views", "1,4", "--out", str(out)])
