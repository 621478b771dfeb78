"""``wingmark export`` end to end on a tiny real training run: ONNX per stage, parity against
PyTorch, ONNX Runtime evaluation, dlib calibration (fitted or documented default), atomic publish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.geometry import BoxCalibration, tight_box
from model_store.schemes import get_scheme
from model_store.store import ModelStore
from train.data.types import Sample
from train.export.publish import DEFAULT_BOX_CALIBRATIONS, calibrate_detector, config_sha256, data_provenance


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real two-stage run (a handful of steps) through the project's training loop."""
    from train.config import resolve
    from train.loop import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "tiny"
    cfg = resolve(
        {
            "name": "tiny",
            "out_dir": str(out),
            "device": "cpu",
            "num_threads": 1,
            "data": {
                "scheme": "aflw19",
                "train": {"kind": "synthetic", "num": 16, "seed": 11, "image_size": 128},
                "val": {"kind": "synthetic", "num": 12, "seed": 12, "image_size": 128},
                "pdb": {"enabled": False, "num_bins": 3},
            },
            "stage1": {"max_steps": 2, "batch_size": 8, "schedule": {"warmup_steps": 1, "min_lr_ratio": 0.1}},
            "stage2": {"max_steps": 2, "batch_size": 8, "schedule": {"warmup_steps": 1, "min_lr_ratio": 0.1}},
            "eval": {
                "thresholds": [0.08, 0.10],
                "batch_size": 16,
                "sets": {"extra": {"kind": "synthetic", "num": 6, "seed": 13, "image_size": 128}},
            },
        }
    )
    train(cfg, progress=False)
    return out


def test_export_main_publishes_a_verified_version(tiny_run, tmp_path, capsys):
    from train.export.cli import export_main

    root = tmp_path / "store"
    report_path = tmp_path / "report.json"
    args = [str(tiny_run), "--name", "tiny-aflw19", "--version", "0.1.0", "--store", str(root)]
    args += ["--work-dir", str(tmp_path / "work"), "--json", str(report_path)]
    assert export_main(args) == 0
    assert '"published"' in capsys.readouterr().out

    store = ModelStore(root)
    model = store.resolve("tiny-aflw19")
    store.verify(model)
    m = model.manifest
    assert (m.name, m.version, m.scheme) == ("tiny-aflw19", "0.1.0", "aflw19")
    assert [s.architecture for s in m.stages] == ["cnn6", "cnn7"]
    assert [s.input_size for s in m.stages] == [64, 128]
    assert all((model.path / s.file).is_file() for s in m.stages)
    assert not list(root.glob("tiny-aflw19/.*")), "staging folders left behind"

    # provenance: the resolved config with its hash, what it was trained on
    assert m.provenance.config["data"]["train"]["num"] == 16
    assert m.provenance.config_sha256 == config_sha256(m.provenance.config)
    assert m.provenance.data["synthetic_only"] is True and m.provenance.code_version

    # evaluation: ONNX Runtime on the run's validation set, per stage, with parity per stage
    ev = m.evaluation
    assert ev["n"] == 12 and ev["dataset"]["seed"] == 12 and ev["normaliser"] == "box_size"
    assert 0 < ev["final"]["nme"] == ev["stage2"]["nme"]
    assert [p["stage"] for p in ev["parity"]] == [1, 2]
    assert all(p["passed"] and p["max_abs_error"] <= 1e-4 for p in ev["parity"])
    # ONNX Runtime reproduces the training loop's own PyTorch validation NME of each stage
    for k in (1, 2):
        assert ev[f"stage{k}"]["nme"] == pytest.approx(
            ev["pytorch_val"][f"stage{k}"]["nme"], rel=1e-3, abs=1e-5
        )

    # the run's extra evaluation sets (eval.sets) are evaluated through ONNX Runtime too
    extra = ev["sets"]["extra"]
    assert extra["n"] == 6 and extra["dataset"]["seed"] == 13 and extra["final"]["nme"] > 0
    assert "labels" not in extra, "only real (teacher-labelled) sets carry the labels note"

    # calibrations: identity client box; dlib on 128-px synthetic images finds too few faces
    assert m.box_calibrations["client"].to_calibration() == BoxCalibration()
    dlib = m.box_calibrations["dlib_hog"]
    assert ev["box_calibration"]["images"] == 12
    if not ev["box_calibration"]["fitted"]:
        assert dlib.to_calibration() == DEFAULT_BOX_CALIBRATIONS["aflw19"].to_calibration()
        assert "default" in dlib.note

    report = json.loads(report_path.read_text())
    assert report["files"].keys() == {s.file for s in m.stages}

    # publishing the same version again is refused unless --overwrite
    assert export_main(args) == 2
    assert export_main([*args, "--overwrite", "--fp16-weights"]) == 0
    again = store.resolve("tiny-aflw19", "0.1.0")
    store.verify(again)
    assert again.manifest.evaluation["fp16_weights_nme_change"] == pytest.approx(0.0, abs=2e-3)
    sizes = {s.file: (again.path / s.file).stat().st_size for s in again.manifest.stages}
    assert all(sizes[f] < 0.55 * report["files"][f]["bytes"] for f in sizes)


def test_export_fails_on_parity(tiny_run, tmp_path):
    from train.export.cli import export_main

    args = [str(tiny_run), "--name", "tiny-x", "--version", "1", "--store", str(tmp_path / "s")]
    # no error can be below a negative tolerance: the export must stop before publishing
    assert export_main([*args, "--tolerance", "-1", "--work-dir", str(tmp_path / "w")]) == 1
    assert ModelStore(tmp_path / "s").list_versions("tiny-x") == []


class ShiftedBoxDetector:
    """Returns a known transform of the tight landmark box (a detector whose bias we know)."""

    name = "dlib_hog"

    def __init__(self, points: dict[int, np.ndarray]) -> None:
        self.points = points

    def detect(self, image: np.ndarray):
        from runtime.detectors import Detections

        pts = self.points.get(id(image))
        if pts is None:
            return Detections(np.zeros((0, 4)), np.zeros(0))
        t = tight_box(pts)
        w, h = t[2] - t[0], t[3] - t[1]
        # detector box: 10% narrower, 20% shorter, centred 5% of its height above the tight box
        cx, cy = (t[0] + t[2]) / 2, (t[1] + t[3]) / 2 - 0.05 * 0.8 * h
        box = np.array([cx - 0.45 * w, cy - 0.4 * h, cx + 0.45 * w, cy + 0.4 * h])
        return Detections(box[None], np.ones(1))


def _samples(n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    base = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float64)
    for _ in range(n):
        pts = base * rng.uniform(0.8, 1.2) + rng.uniform(0, 20, size=2)
        out.append(Sample(np.zeros((128, 128, 3), np.uint8), pts, tight_box(pts), "aflw19"))
    return out


def test_calibrate_detector_fits_when_enough_faces_and_defaults_otherwise():
    scheme = get_scheme("aflw19")
    samples = _samples(10)
    found = {id(s.image): s.points for s in samples[:6]}  # the detector "finds" 6 of 10 faces
    cal, info, idx, boxes = calibrate_detector(
        samples, scheme, min_faces=5, detector=ShiftedBoxDetector(found)
    )
    assert info["fitted"] and info["faces_found"] == 6 and list(idx) == [0, 1, 2, 3, 4, 5]
    assert cal.fitted_on == 6
    assert (cal.sw, cal.sh) == pytest.approx((1 / 0.9, 1 / 0.8))
    assert cal.dy == pytest.approx(0.05) and cal.dx == pytest.approx(0.0, abs=1e-9)
    # applying the fitted calibration to the detector boxes gives back the tight boxes
    np.testing.assert_allclose(
        cal.to_calibration().apply(boxes), np.stack([tight_box(s.points) for s in samples[:6]]), atol=1e-9
    )

    cal2, info2, _, _ = calibrate_detector(samples, scheme, min_faces=7, detector=ShiftedBoxDetector(found))
    assert not info2["fitted"] and info2["faces_found"] == 6
    assert cal2 == DEFAULT_BOX_CALIBRATIONS["aflw19"]


def test_data_provenance_flags_synthetic_only():
    cfg = {"data": {"scheme": "ibug68", "train": {"kind": "synthetic"}, "val": {"kind": "synthetic"}}}
    assert data_provenance(cfg)["synthetic_only"] is True
    cfg["data"]["train"] = {"kind": "300w", "root": "/d", "split": "train"}
    prov = data_provenance(cfg)
    assert prov["synthetic_only"] is False and prov["kinds"] == ["300w", "synthetic"]


def test_data_provenance_of_a_mix_names_the_real_caches_teachers_sources_and_licence():
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "real"
    train = {
        "kind": "mix",
        "parts": [
            {"name": "synthetic", "kind": "synthetic", "num": 10},
            {"name": "real", "kind": "real", "root": str(fixture), "split": "train", "repeat": 2},
        ],
    }
    cfg = {"data": {"scheme": "ibug68", "train": train, "val": {"kind": "synthetic"}}}
    prov = data_provenance(cfg)
    assert prov["kinds"] == ["real", "synthetic"] and prov["real_photographs"] is True
    assert prov["synthetic_only"] is False
    (real,) = prov["real_faces"]
    assert real["root"] == str(fixture) and real["teacher"] and "not human ground truth" in real["labels"]
    assert set(real["sources"]) == {"alpha", "beta"}
    assert "commercial" in prov["licence"]


def test_own_calibration_is_the_detectors_per_scheme_file_or_none() -> None:
    from model_store.geometry import BoxCalibration
    from train.export.publish import own_calibration

    class HasOwn(ShiftedBoxDetector):
        name = "has_own"

        def calibration(self, scheme_name: str) -> BoxCalibration | None:
            return BoxCalibration(dx=0.0, dy=0.1, sw=0.9, sh=0.8) if scheme_name == "aflw19" else None

    spec = own_calibration(HasOwn({}), "aflw19")
    assert spec is not None and spec.to_calibration() == BoxCalibration(dx=0.0, dy=0.1, sw=0.9, sh=0.8)
    assert "has_own" in (spec.note or "")
    assert own_calibration(HasOwn({}), "ibug68") is None  # none for that scheme
    assert own_calibration(ShiftedBoxDetector({}), "aflw19") is None  # a detector without one


def test_a_start_from_one_network_of_a_gated_stage_is_recorded() -> None:
    from train.export.publish import _initial_weights

    root = Path(__file__).parents[3] / "model_store" / "models" / "faceapi-ibug68" / "4.8.0"
    src = f"{root}/stage2_faceapi68.gated.onnx#turned"
    record = _initial_weights({"pretrained": src})
    assert record["source"] == src and record["member"] == "turned"
    assert record["model"] == "faceapi-ibug68@4.8.0"  # found through the file part, not the whole string
    plain = _initial_weights({"pretrained": f"{root}/stage2_faceapi68.gated.onnx"})
    assert "member" not in plain and plain["model"] == "faceapi-ibug68@4.8.0"
