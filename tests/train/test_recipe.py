"""The 2.0.0 training recipe's pieces: real + synthetic mixing, per-stage augmentation, stage 2 on
held-out stage-1 residuals, and a few-step end-to-end smoke run on the real-face fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_store.geometry import CropRule, eye_angle, tight_box
from model_store.preprocess import Normalisation
from model_store.schemes import IBUG68
from train.config import load_config, resolve
from train.data.residuals import ResidualBank, crop_residuals, perturb_points
from train.dataset import CropDataset, load_samples
from train.loop import fold_assignment, stage_augment, train

torch.set_num_threads(1)

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"
SYNTH = {"kind": "synthetic", "num": 6, "seed": 21, "image_size": 128, "workers": 1}


def test_mix_concatenates_parts_with_repeats_and_subset_names() -> None:
    spec = {
        "kind": "mix",
        "parts": [
            {"name": "synthetic", **SYNTH},
            {"name": "real", "kind": "real", "root": str(REAL), "split": "train", "repeat": 3},
        ],
    }
    samples = load_samples(spec, "ibug68", progress=False)
    synth = load_samples(SYNTH, "ibug68", progress=False)
    real = load_samples({"kind": "real", "root": str(REAL), "split": "train"}, "ibug68", progress=False)
    assert len(real) == 2  # the fixture's kept training faces
    assert len(samples) == len(synth) + 3 * len(real)
    subsets = [s.meta["subset"] for s in samples]
    assert subsets == ["synthetic"] * len(synth) + ["real"] * (3 * len(real))
    # repeats are the same faces, not re-loaded copies; real faces keep their identity split
    assert samples[len(synth)].image is samples[len(synth) + len(real)].image
    assert {s.meta["split"] for s in samples[len(synth) :]} == {"train"}
    np.testing.assert_array_equal(samples[0].points, synth[0].points)


def test_real_test_split_holds_other_identities() -> None:
    train_ids = {
        s.meta["identity"]
        for s in load_samples({"kind": "real", "root": str(REAL), "split": "train"}, "ibug68", progress=False)
    }
    test_ids = {
        s.meta["identity"]
        for s in load_samples({"kind": "real", "root": str(REAL), "split": "test"}, "ibug68", progress=False)
    }
    assert train_ids and test_ids and not train_ids & test_ids


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"kind": "mix", "parts": []}, "non-empty"),
        ({"kind": "mix", "parts": [{**SYNTH, "repeat": 0}]}, "repeat"),
        ({"kind": "mix", "parts": [{**SYNTH, "repeat": 1.5}]}, "repeat"),
        ({"kind": "mix", "parts": [{"num": 3}]}, "kind"),
    ],
)
def test_bad_mix_specs_are_refused(spec: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_samples(spec, "ibug68", progress=False)


def test_real_faces_in_the_19_point_scheme() -> None:
    spec = {"kind": "real", "root": str(REAL), "split": "train"}
    s68 = load_samples(spec, "ibug68", progress=False)
    s19 = load_samples(spec, "aflw19", progress=False)
    assert [s.scheme for s in s19] == ["aflw19"] * len(s68)
    for a, b in zip(s68, s19, strict=True):
        assert b.points.shape == (19, 2)
        np.testing.assert_allclose(b.points[18], a.points[8], atol=1e-4)  # chin
        np.testing.assert_allclose(b.points[7], a.points[36:42].mean(axis=0), atol=1e-4)  # right eye centre
        np.testing.assert_allclose(b.box, tight_box(b.points), atol=1e-4)
        np.testing.assert_array_equal(b.image, a.image)


def _cfg(**stage2: Any) -> dict[str, Any]:
    return resolve(
        {
            "data": {"augment": {"rotation_deg": 30.0}},
            "stage2": stage2,
        }
    )


def test_per_stage_augment_overrides_data_augment() -> None:
    cfg = _cfg(augment={"rotation_deg": 3.0, "scale": [0.98, 1.02]})
    assert stage_augment(cfg, 1).rotation_deg == 30.0
    a2 = stage_augment(cfg, 2)
    assert a2.rotation_deg == 3.0 and a2.scale == (0.98, 1.02)
    assert stage_augment(_cfg(), 2).rotation_deg == 30.0  # none given: data.augment
    with pytest.raises(ValueError, match="augment"):
        _cfg(augment=[1, 2])
    with pytest.raises(TypeError):
        stage_augment(_cfg(augment={"rotation": 3.0}), 2)  # a typo is an error, not a default


def test_stage2_augment_reaches_its_crops() -> None:
    """Stage-2 crops re-aligned on ground truth: with its own zero-rotation augmentation the eye line
    in the crop is level; with the data-wide 30-degree one it is not."""
    samples = load_samples(SYNTH, "ibug68", progress=False)
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    still = {"rotation_deg": 0.0, "translate": 0.0, "scale": [1.0, 1.0], "flip_prob": 0.0}
    angles = {}
    for name, cfg in (("own", _cfg(augment=still)), ("data", _cfg())):
        ds = CropDataset(
            samples,
            np.arange(len(samples)),
            IBUG68,
            64,
            CropRule(),
            Normalisation(),
            stage_augment(cfg, 2),
            0,
            init_points=gt,
        )
        angles[name] = [abs(eye_angle(ds[i][1].numpy().reshape(-1, 2), IBUG68)) for i in range(len(ds))]
    assert max(angles["own"]) < 1e-3
    assert max(angles["data"]) > 0.05


def test_residuals_round_trip_and_draw() -> None:
    samples = load_samples(SYNTH, "ibug68", progress=False)
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    rng = np.random.default_rng(0)
    pred = gt + rng.normal(0.0, 2.0, gt.shape) + np.array([3.0, -1.0])  # a noisy, shifted "stage 1"
    rule = CropRule(roll="blend")
    res = crop_residuals(pred, gt, IBUG68, rule)  # (N, K, 2) crop units
    assert res.shape == gt.shape
    side = 1.25 * np.ptp(gt, axis=1).max(axis=1)  # crop side in px (roughly: the de-rotated box)
    assert np.abs(res.mean(axis=(1, 2))).max() < 5.0 / side.min()  # in crop units, not pixels
    for i in range(len(gt)):
        np.testing.assert_allclose(perturb_points(gt[i], res[i], IBUG68, rule), pred[i], atol=1e-9)
    # another face receives the residual scaled to its own size and orientation
    other = perturb_points(gt[1], res[0], IBUG68, rule)
    np.testing.assert_allclose(crop_residuals(other[None], gt[1:2], IBUG68, rule)[0], res[0], atol=1e-9)

    bank = ResidualBank.from_predictions(pred, gt, IBUG68, rule, mirror=False)
    draws = {bank.draw(np.random.default_rng(k)).tobytes() for k in range(40)}
    assert draws == {r.tobytes() for r in bank.residuals}  # uniform over the bank, only its members
    mirrored = ResidualBank(bank.residuals[:1], IBUG68, rule, mirror=True)
    seen = {mirrored.draw(np.random.default_rng(k))[36, 0].round(12) for k in range(20)}
    assert seen == {bank.residuals[0, 36, 0].round(12), -bank.residuals[0, 45, 0].round(12)}
    with pytest.raises(ValueError, match="residuals"):
        ResidualBank(np.zeros((0, 68, 2)), IBUG68, rule)


def test_crop_dataset_realigns_on_ground_truth_plus_a_residual() -> None:
    samples = load_samples(SYNTH, "ibug68", progress=False)
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    rule = CropRule()
    zero = ResidualBank(np.zeros((1, 68, 2)), IBUG68, rule, mirror=False)
    shifted = ResidualBank(np.tile([0.1, 0.0], (1, 68, 1)), IBUG68, rule, mirror=False)
    none = {
        "rotation_deg": 0.0,
        "translate": 0.0,
        "scale": [1.0, 1.0],
        "flip_prob": 0.0,
        "photometric": False,
        "blur_prob": 0.0,
        "occlusion_prob": 0.0,
    }
    aug = stage_augment(_cfg(augment=none), 2)
    ds_gt = CropDataset(samples, np.arange(6), IBUG68, 64, rule, Normalisation(), aug, 0, init_points=gt)
    ds_zero = CropDataset(samples, np.arange(6), IBUG68, 64, rule, Normalisation(), aug, 0, residuals=zero)
    ds_shift = CropDataset(
        samples, np.arange(6), IBUG68, 64, rule, Normalisation(), aug, 0, residuals=shifted
    )
    for i in range(6):
        np.testing.assert_allclose(ds_zero[i][1].numpy(), ds_gt[i][1].numpy(), atol=1e-5)
        # stage 1 "predicted" 10 % of the crop to the right: the crop follows, the face sits 10 % left
        dx = (ds_shift[i][1].numpy().reshape(-1, 2) - ds_gt[i][1].numpy().reshape(-1, 2))[:, 0]
        np.testing.assert_allclose(dx, -0.1, atol=1e-4)
    with pytest.raises(ValueError, match="not both"):
        CropDataset(
            samples, np.arange(6), IBUG68, 64, rule, Normalisation(), aug, 0, init_points=gt, residuals=zero
        )


@pytest.mark.parametrize("name", ["cnn67_mixed_ibug68", "cnn67_mixed_aflw19"])
def test_recipe_config_resolves(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg["data"]["scheme"] == name.rsplit("_", 1)[1]
    assert cfg["data"]["train"]["kind"] == "mix"
    assert {p["name"] for p in cfg["data"]["train"]["parts"]} == {"synthetic", "real"}
    assert cfg["stage2"]["init"]["mode"] == "heldout_residuals"
    assert cfg["stage2"]["crop_rule"]["roll"] == "blend"
    assert stage_augment(cfg, 2).rotation_deg < stage_augment(cfg, 1).rotation_deg
    assert cfg["eval"]["sets"]["real_test"]["split"] == "test"
    with pytest.raises(ValueError, match=r"init\.mode"):
        resolve({"stage2": {"init": {"mode": "gt"}}})


def test_smoke_mixed_training_end_to_end(tmp_path: Path) -> None:
    """A few steps of the 2.0.0 recipe on 6 synthetic + the fixture's real training faces: stage 2 on
    held-out residuals, the real held-out faces evaluated beside the synthetic test set."""
    real = {"kind": "real", "root": str(REAL)}
    cfg = resolve(
        {
            "name": "smoke",
            "out_dir": str(tmp_path),
            "num_threads": 1,
            "data": {
                "scheme": "ibug68",
                "train": {
                    "kind": "mix",
                    "parts": [
                        {"name": "synthetic", **SYNTH},
                        {"name": "real", **real, "split": "train", "repeat": 2},
                    ],
                },
                "val": {"kind": "synthetic", "num": 4, "seed": 22, "image_size": 128, "workers": 1},
                "pdb": {"enabled": False},
            },
            "stage1": {"max_steps": 3, "batch_size": 4, "schedule": {"warmup_steps": 1}},
            "stage2": {
                "max_steps": 2,
                "batch_size": 4,
                "schedule": {"warmup_steps": 1},
                "crop_rule": {"roll": "blend"},
                "augment": {"rotation_deg": 3.0, "translate": 0.02},
                "init": {
                    "mode": "heldout_residuals",
                    "data": {"kind": "synthetic", "num": 4, "seed": 23, "image_size": 128, "workers": 1},
                },
            },
            "eval": {"sets": {"real_test": {**real, "split": "test"}}},
        }
    )
    report = train(cfg, progress=False)
    bank = np.load(tmp_path / "stage2" / "residuals.npz")["residuals"]
    assert bank.shape == (4, 68, 2) and np.isfinite(bank).all() and np.abs(bank).max() > 0
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["n"] for r in rows if r["kind"] == "residuals"] == [4]
    ck2 = torch.load(tmp_path / "stage2" / "best.pt", weights_only=False)
    assert ck2["crop_rule"]["roll"] == "blend"
    sets = json.loads((tmp_path / "eval_sets.json").read_text())
    assert sets == report["sets"]
    assert set(sets["real_test"]) == {"stage1", "stage2"}
    assert sets["real_test"]["stage2"]["n"] == 2  # the fixture's kept test faces
    assert np.isfinite(sets["real_test"]["stage2"]["nme"])
    real_eval = json.loads((tmp_path / "eval_real_test" / "eval.json").read_text())
    assert real_eval["stage1"]["overall"]["n"] == 2
    assert report["stage1"]["overall"]["n"] == 4  # the synthetic val set stands in as test


def test_fold_assignment_keeps_identities_together_and_repeats_once() -> None:
    spec = {
        "kind": "mix",
        "parts": [
            {"name": "synthetic", **SYNTH},
            {"name": "real", "kind": "real", "root": str(REAL), "split": "all", "repeat": 2},
        ],
    }
    samples = load_samples(spec, "ibug68", progress=False)
    folds = fold_assignment(samples, 3, seed=0)
    distinct = {id(s) for s in samples}
    assert set(folds) == distinct and len(distinct) == 6 + 4  # repeats are one face each
    by_identity: dict[str, set[int]] = {}
    for s in samples:
        if "identity" in s.meta:
            by_identity.setdefault(s.meta["identity"], set()).add(folds[id(s)])
    assert len(by_identity) >= 2 and all(len(v) == 1 for v in by_identity.values())
    assert set(folds.values()) == {0, 1, 2}
    assert fold_assignment(samples, 3, seed=0) == folds


def test_smoke_kfold_residuals(tmp_path: Path) -> None:
    """Two extra 2-step stage-1 models, each held out on its fold: one residual per distinct face."""
    cfg = resolve(
        {
            "out_dir": str(tmp_path),
            "num_threads": 1,
            "data": {
                "scheme": "ibug68",
                "train": {
                    "kind": "mix",
                    "parts": [
                        {"name": "synthetic", **SYNTH},
                        {"name": "real", "kind": "real", "root": str(REAL), "split": "train", "repeat": 2},
                    ],
                },
                "val": {"kind": "synthetic", "num": 4, "seed": 22, "image_size": 128, "workers": 1},
                "pdb": {"enabled": False},
            },
            "stage1": {"max_steps": 2, "batch_size": 2, "schedule": {"warmup_steps": 1}},
            "stage2": {
                "max_steps": 1,
                "batch_size": 2,
                "schedule": {"warmup_steps": 1},
                "init": {"mode": "kfold_residuals", "folds": 2, "fold_max_steps": 1},
            },
        }
    )
    train(cfg, progress=False, evaluate=False)
    for f in (0, 1):
        ck = torch.load(tmp_path / "folds" / f"fold{f}" / "stage1" / "best.pt", weights_only=False)
        assert ck["step"] == 1  # fold_max_steps, not stage1's 2
    bank = np.load(tmp_path / "stage2" / "residuals.npz")["residuals"]
    assert bank.shape == (6 + 2, 68, 2) and np.isfinite(bank).all()
    with pytest.raises(ValueError, match="folds"):
        resolve({"stage2": {"init": {"mode": "kfold_residuals", "folds": 1}}})
