"""tools.studies.gate_figure and yaw_errors on published versions: real renders through the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tools.studies import gate_figure, yaw_errors


def test_the_figure_draws_three_turned_faces_the_gate_changes(tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    args = ["faceapi-ibug68@4.3.0", "faceapi-ibug68@4.4.0", "--num", "24", "--seed", "41", "--uniform-yaw"]
    assert gate_figure.main([*args, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    assert Image.open(out).size == (2 * gate_figure.SIDE, 3 * gate_figure.SIDE)
    report = json.loads(out.with_suffix(".json").read_text())
    assert 0 < report["changed_by_second"] <= report["faces"] < 24
    assert all(abs(face["yaw"]) >= 60 for face in report["drawn"])
    assert set(report["nme"]) == {"faceapi-ibug68@4.3.0", "faceapi-ibug68@4.4.0"}


def test_yaw_errors_reads_a_published_version(tmp_path: Path) -> None:
    out = tmp_path / "yaw.json"
    argv = ["faceapi-ibug68@4.4.0", "--num", "12", "--seed", "41", "--jaw", "contour"]
    assert yaw_errors.main([*argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["run"] == "faceapi-ibug68@4.4.0" and run["stages"] == ["faceapi68", "faceapi68"]
    assert run["stage2"]["all"]["n"] == 12 and run["stage2"]["all"]["nme"] < run["stage1"]["all"]["nme"]


def test_yaw_errors_on_re_posed_held_out_faces(tmp_path: Path) -> None:
    """``--data`` replaces the synthetic test set: here the fixture cache's two held-out faces re-posed
    three times each; the report names the labels (teacher labels carried through the mesh)."""
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "real"
    data = {"kind": "repose", "root": str(fixture), "mesh3d": str(fixture / "repose" / "mesh3d.npz"),
            "split": "test", "per_face": 3, "seed": 2, "image_size": 128}  # fmt: skip
    out = tmp_path / "yaw.json"
    assert yaw_errors.main(["faceapi-ibug68@4.5.0", "--data", json.dumps(data), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"] == data and report["labels"] == yaw_errors.DATA_LABELS["repose"]
    (run,) = report["runs"]
    assert run["stage2"]["all"]["n"] == 6 and 0 < run["stage2"]["all"]["nme"] < 1


def test_yaw_errors_from_dlib_hog_boxes_as_client_boxes(tmp_path: Path) -> None:
    """``--client-box dlib_hog``: the faces HOG finds, landmarked from its box; beside them the tight-box
    figures of the same faces, and per |yaw| bin how many HOG found."""
    out = tmp_path / "yaw.json"
    argv = ["faceapi-ibug68@4.5.0", "--num", "12", "--seed", "41", "--client-box", "dlib_hog"]
    assert yaw_errors.main([*argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    (run,) = json.loads(out.read_text())["runs"]
    found = run["found_by_detector"]
    assert sum(n for _, n in found.values()) == 12
    hits = sum(f for f, _ in found.values())
    assert 0 < hits <= 12 and run["client_box"] == "dlib_hog"
    assert run["stage2"]["all"]["n"] == run["tight_same_faces"]["all"]["n"] == hits
    assert run["stage2"]["all"]["nme"] != run["tight_same_faces"]["all"]["nme"]  # HOG's box was used
    assert 0 < run["stage2"]["all"]["nme"] < 0.5


def test_yaw_errors_refuses_hog_boxes_for_a_training_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        yaw_errors.main([str(tmp_path), "--client-box", "dlib_hog"])
    assert info.value.code == 2
