from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from train.config import DEFAULTS, apply_overrides, load_config, parse_override, resolve, save_config
from train.loop import lr_at

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "train" / "configs").glob("*.yaml"))


def test_parse_override_types() -> None:
    assert parse_override("stage1.optim.lr=3e-4") == (["stage1", "optim", "lr"], 3e-4)
    assert parse_override("stage2.enabled=false") == (["stage2", "enabled"], False)
    assert parse_override("data.train.pose={yaw_std: 30}") == (["data", "train", "pose"], {"yaw_std": 30})
    assert parse_override("out_dir=runs/x") == (["out_dir"], "runs/x")
    with pytest.raises(ValueError):
        parse_override("stage1.epochs")


def test_resolve_merges_defaults_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "stage1": {"epochs": 3, "optim": {"lr": 0.01}}}))
    cfg = load_config(path, ["stage1.batch_size=8", "data.train.num=50", "stage2.enabled=false"])
    assert cfg["name"] == "t"
    assert cfg["stage1"]["epochs"] == 3
    assert cfg["stage1"]["optim"] == {"lr": 0.01}  # free-form sub-tree replaced as a whole by the file
    assert cfg["stage1"]["batch_size"] == 8
    assert cfg["stage1"]["loss"] == DEFAULTS["stage1"]["loss"]
    assert cfg["data"]["train"]["num"] == 50
    assert cfg["stage2"]["enabled"] is False
    # defaults untouched
    assert DEFAULTS["stage1"]["epochs"] == 10
    # round trip through the saved YAML
    save_config(cfg, tmp_path / "out" / "config.resolved.yaml")
    again = load_config(tmp_path / "out" / "config.resolved.yaml")
    assert again == cfg


def test_typos_are_errors() -> None:
    with pytest.raises(KeyError):
        resolve({"stage1": {"epoch": 3}})
    with pytest.raises(KeyError):
        apply_overrides(DEFAULTS, ["stage1.batchsize=3"])
    with pytest.raises(KeyError):
        apply_overrides(DEFAULTS, ["nope.x=1"])
    with pytest.raises(ValueError):
        resolve({"data": {"scheme": "wflw98"}})
    with pytest.raises(ValueError):
        resolve({"stage1": {"enabled": False}})
    # free-form sub-trees accept new keys
    cfg = apply_overrides(DEFAULTS, ["stage1.loss.w=5", "data.augment.flip_prob=0.0"])
    assert cfg["stage1"]["loss"]["w"] == 5
    assert cfg["data"]["augment"] == {"flip_prob": 0.0}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_resolve(path: Path) -> None:
    from train.models import list_models

    cfg = load_config(path)
    assert cfg["stage1"]["architecture"] in list_models()
    if cfg["stage2"].get("enabled", True):
        assert cfg["stage2"]["architecture"] in list_models()
    assert cfg["data"]["scheme"] in {"ibug68", "aflw19"}


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, 0.1) == pytest.approx(0.55)  # half-way: min + (1-min)/2
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    values = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
