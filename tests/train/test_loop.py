"""End-to-end training on a tiny synthetic set: files, checkpoint contract, resume, learning, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_store.geometry import CropRule
from model_store.preprocess import Normalisation
from model_store.schemes import get_scheme
from train.cli import eval_main, train_main
from train.config import resolve
from train.dataset import load_samples, make_eval_crops
from train.loop import _normalisation, _stage_nme, evaluate_run, load_checkpoint, train, weight_average

torch.set_num_threads(1)

CKPT_KEYS = {
    "config",
    "model",
    "architecture",
    "num_points",
    "scheme",
    "input_size",
    "crop_rule",
    "normalisation",
    "stage",
    "val",
}


def _tiny(out: Path, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "tiny",
        "out_dir": str(out),
        "num_threads": 1,
        "data": {
            "scheme": "ibug68",
            "train": {"kind": "synthetic", "num": 12, "seed": 11, "image_size": 128, "workers": 1},
            "val": {"kind": "synthetic", "num": 6, "seed": 12, "image_size": 128, "workers": 1},
            "pdb": {"enabled": True, "num_bins": 3},
        },
        "stage1": {"max_steps": 4, "batch_size": 4, "schedule": {"warmup_steps": 1}},
        "stage2": {"max_steps": 2, "batch_size": 4, "schedule": {"warmup_steps": 1}},
    }
    for key, value in extra.items():
        node = raw
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return resolve(raw)


@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("run")
    cfg = _tiny(out)
    report = train(cfg, progress=False)
    return out, cfg, report


def test_run_directory_contents(cascade_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, _, report = cascade_run
    for name in ["config.resolved.yaml", "metrics.jsonl", "curves.png", "eval.json", "ced.png"]:
        assert (out / name).is_file(), name
    for k in (1, 2):
        assert (out / f"stage{k}" / "best.pt").is_file()
        assert (out / f"stage{k}" / "last.pt").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows if r["kind"] == "val"} == {1, 2}
    assert [r["step"] for r in rows if r["kind"] == "train" and r["stage"] == 1][-1] == 4
    saved = json.loads((out / "eval.json").read_text())
    assert saved["final"] == report["final"]
    assert set(saved) >= {"stage1", "stage2", "final", "thresholds"}
    assert saved["stage2"]["architecture"] == "cnn7"
    assert saved["stage1"]["overall"]["n"] == 6
    assert "0.08" in saved["final"]["auc"] and "0.10" in saved["final"]["failure_rate"]
    assert any(k.startswith("|yaw|") for k in saved["stage1"]["yaw"])
    # NME is a fraction of the inter-ocular distance: a 4-step model is neither perfect nor off by a whole
    # face (a percent or pixel value would fail here); "final" is the last stage's overall summary
    assert 0.01 < saved["final"]["nme"] < 1.0
    assert saved["final"] == saved["stage2"]["overall"]


def test_checkpoint_alone_rebuilds_the_stage(
    cascade_run: tuple[Path, dict[str, Any], dict[str, Any]],
) -> None:
    out, cfg, _ = cascade_run
    for k, arch, size in [(1, "cnn6", 64), (2, "cnn7", 128)]:
        model, ck = load_checkpoint(out / f"stage{k}" / "best.pt")
        assert set(ck) >= CKPT_KEYS
        assert ck["stage"] == k and ck["architecture"] == arch and ck["input_size"] == size
        assert ck["num_points"] == 68 and ck["scheme"] == "ibug68"
        assert CropRule(**ck["crop_rule"]) == CropRule(1.25, 0.0, 0.0)
        Normalisation(**{key: tuple(v) for key, v in ck["normalisation"].items()})
        assert ck["config"] == cfg
        assert np.isfinite(ck["val"]["nme"])
        y = model(torch.zeros(2, 3, size, size))
        assert y.shape == (2, 136)


def test_resume_skips_completed_stages(cascade_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, cfg, report = cascade_run
    before = {k: (out / f"stage{k}" / "best.pt").stat().st_mtime_ns for k in (1, 2)}
    again = train({**cfg, "resume": True}, progress=False)
    after = {k: (out / f"stage{k}" / "best.pt").stat().st_mtime_ns for k in (1, 2)}
    assert before == after
    assert again["final"]["nme"] == pytest.approx(report["final"]["nme"])


def test_resume_continues_an_unfinished_stage(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, **{"stage2.enabled": False, "stage1.max_steps": 2})
    train(cfg, progress=False)
    # ask for a larger budget: the finished stage continues from step 2 instead of restarting
    more = {**cfg, "resume": True, "stage1": {**cfg["stage1"], "max_steps": 5}}
    train(more, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "val"]
    assert steps == [1, 2, 3, 4, 5]  # continued at 3; a restart would log 1, 2 again
    assert torch.load(tmp_path / "stage1" / "last.pt", weights_only=False)["step"] == 5


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    cfg = _tiny(
        tmp_path,
        **{
            "stage2.enabled": False,
            "stage1.max_steps": 60,
            "stage1.optim": {"name": "adamw", "lr": 2e-3},
            "data.pdb.enabled": False,
        },
    )
    train(cfg, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 3
    assert losses[-1] < 0.6 * losses[0]


def test_cli_train_and_eval(tmp_path: Path, cascade_run: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
    out, _, _ = cascade_run
    rc = eval_main([str(out), "--out", str(tmp_path / "ev"), "--data", "kind=synthetic", "num=4", "seed=99",
                    "image_size=128", "workers=1"])  # fmt: skip
    assert rc == 0
    rep = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert rep["stage2"]["overall"]["n"] == 4
    assert (tmp_path / "ev" / "ced.png").stat().st_size > 1000
    assert eval_main([str(tmp_path / "nothing")]) == 2
    # unknown override -> usage error, nothing trained
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("name: x\n")
    assert train_main([str(cfg_path), "stage1.epochz=3"]) == 2


def test_evaluate_run_rejects_a_dir_without_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        evaluate_run(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_training_with_bf16_autocast(tmp_path: Path) -> None:
    cfg = _tiny(tmp_path, **{"device": "cuda", "stage1.amp": True, "stage2.amp": True, "stage2.max_steps": 2})
    report = train(cfg, progress=False)
    assert np.isfinite(report["final"]["nme"])
    model, ck = load_checkpoint(tmp_path / "stage2" / "best.pt", "cuda")
    assert next(model.parameters()).is_cuda and ck["architecture"] == "cnn7"


def test_a_second_stage_can_start_from_the_runs_own_first_stage(tmp_path: Path) -> None:
    """``pretrained: stage1`` loads ``run_dir/stage1/best.pt``; another architecture or K is refused."""
    from train.loop import build_stage_model
    from train.models import create_model

    first = create_model("cnn6", 68)
    (tmp_path / "stage1").mkdir()
    ckpt = {"architecture": "cnn6", "num_points": 68, "model": first.state_dict()}
    torch.save(ckpt, tmp_path / "stage1" / "best.pt")
    second = build_stage_model({"architecture": "cnn6", "pretrained": "stage1"}, 68, tmp_path)
    x = torch.randn(2, 3, 64, 64)
    first.eval(), second.eval()
    torch.testing.assert_close(first(x), second(x))
    fresh = build_stage_model({"architecture": "cnn6"}, 68, tmp_path).eval()
    assert not torch.allclose(fresh(x), first(x))
    with pytest.raises(ValueError, match="cnn6 for 68 points"):
        build_stage_model({"architecture": "cnn6", "pretrained": "stage1"}, 19, tmp_path)
    with pytest.raises(ValueError, match="run directory"):
        build_stage_model({"architecture": "cnn6", "pretrained": "stage1"}, 68)


def test_face_weights_reach_the_loss(tmp_path: Path) -> None:
    """``face_weight`` with ref far above any face's normaliser/box ratio weights every face ``cap``:
    the first step's loss is exactly ``cap`` times the unweighted one on the same batch."""

    def first_loss(out: Path, face_weight: dict[str, float] | None) -> float:
        extra = {"stage2.enabled": False, "stage1.max_steps": 1, "stage1.face_weight": face_weight}
        cfg = _tiny(out, **extra)
        train(cfg, progress=False)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        weights = [r for r in rows if r["kind"] == "face_weight"]
        assert len(weights) == (face_weight is not None)
        if weights:  # every face at the cap, logged for the run
            assert weights[0]["mean"] == pytest.approx(2.5) and weights[0]["at_cap"] == 1.0
        return float(next(r["loss"] for r in rows if r["kind"] == "train"))

    plain = first_loss(tmp_path / "plain", None)
    weighted = first_loss(tmp_path / "weighted", {"ref": 100.0, "cap": 2.5})
    assert weighted == pytest.approx(2.5 * plain, rel=1e-4)
    with pytest.raises(ValueError, match="face_weight"):
        _tiny(tmp_path, **{"stage1.face_weight": {"ref": 0.66}})


def test_weight_average_by_hand() -> None:
    """The first update copies the weights, each later one moves the average (1 - decay) of the way."""
    net = torch.nn.Linear(1, 1, bias=False)
    avg = weight_average(net, 0.5)
    for value in (1.0, 3.0, 7.0):
        with torch.no_grad():
            net.weight.fill_(value)
        avg.update_parameters(net)
    # 1 -> 0.5 * 1 + 0.5 * 3 = 2 -> 0.5 * 2 + 0.5 * 7 = 4.5
    weight = avg.module.weight
    assert isinstance(weight, torch.Tensor) and float(weight.item()) == pytest.approx(4.5)


def test_ema_validates_keeps_and_resumes_the_average(tmp_path: Path) -> None:
    """With ``ema`` on, the checkpoints' "model" is the average: its validation NME is the one logged,
    last.pt also carries the trained weights, best.pt does not, and a larger budget resumes both."""
    extra = {"stage2.enabled": False, "stage1.max_steps": 3, "stage1.ema": 0.9,
             "stage1.optim": {"name": "adamw", "lr": 5e-3}, "stage1.eval_interval": 3}  # fmt: skip
    cfg = _tiny(tmp_path, **extra)
    train(cfg, progress=False)
    last = torch.load(tmp_path / "stage1" / "last.pt", weights_only=False)
    best = torch.load(tmp_path / "stage1" / "best.pt", weights_only=False)
    assert "model_trained" in last and "model_trained" not in best
    differs = [
        k
        for k, v in last["model"].items()
        if v.is_floating_point() and not torch.equal(v, last["model_trained"][k])
    ]
    assert differs  # the average is not the trained weights
    # the NME recorded is the average's, recomputed here from the checkpoint alone
    model, ck = load_checkpoint(tmp_path / "stage1" / "best.pt")
    scheme = get_scheme("ibug68")
    crops = make_eval_crops(load_samples(cfg["data"]["val"], "ibug68", progress=False), scheme,
                            int(ck["input_size"]), CropRule.from_dict(ck["crop_rule"]))  # fmt: skip
    norm = _normalisation(ck["config"]["stage1"])
    _, nme = _stage_nme(model, crops, norm, 8, torch.device("cpu"))
    assert float(nme.mean()) == pytest.approx(best["val"]["nme"], rel=1e-5)
    # a larger budget: the average goes on from the kept one
    more = {**cfg, "resume": True, "stage1": {**cfg["stage1"], "max_steps": 5}}
    train(more, progress=False)
    again = torch.load(tmp_path / "stage1" / "last.pt", weights_only=False)
    assert again["step"] == 5 and "model_trained" in again
    # a decay near 0 follows the trained weights step by step (an average never updated would not)
    near = _tiny(tmp_path / "near", **{**extra, "stage1.ema": 1e-6})
    train(near, progress=False)
    follow = torch.load(tmp_path / "near" / "stage1" / "last.pt", weights_only=False)
    for k, v in follow["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, follow["model_trained"][k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="ema"):
        _tiny(tmp_path, **{"stage1.ema": 1.0})
