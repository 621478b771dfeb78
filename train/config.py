"""Training configuration: YAML file + ``key=value`` overrides (dotted keys) -> resolved dict.

The resolved config is a plain nested dict (JSON/YAML serialisable). It is written next to
every output (``config.resolved.yaml``) and stored in every checkpoint, so a checkpoint alone
can rebuild its model and its data. Unknown keys are errors (a typo must not silently train
with a default).

Layout (see train/configs/*.yaml for complete examples)::

    name, seed, out_dir, device (auto|cpu|cuda), num_threads, resume
    data:    scheme, train/val/test (dataset specs), pdb {enabled, num_bins}, augment {...}
    stage1:  architecture, model_kwargs, pretrained, crop_rule, normalisation, loss, optim,
             schedule, epochs, max_steps, batch_size, grad_clip, eval_interval, num_workers, amp,
             face_weight (null | {ref, cap}: per-face loss weights, train.losses.normaliser_weights),
             ema (0: off; a decay in (0, 1): the weights validated, kept and exported are an
             exponential moving average of the trained ones)
             augment (None -> data.augment; else this stage's own AugmentConfig fields)
    stage2:  same keys plus ``enabled`` (false -> single-stage model); trained on crops
             re-aligned from stage-1 points, chosen by ``init``:
             {mode: train_predictions}: stage-1 predictions on the training faces (the 1.0.0 recipe);
             {mode: heldout_residuals, data: <dataset spec> | None (-> data.val), mirror: bool}:
             stage 1 is run on the held-out ``data``, its errors recorded in crop units
             (train.data.residuals) and every training crop re-aligned on ground truth + a residual
             drawn from them;
             {mode: kfold_residuals, folds: k >= 2, fold_max_steps}: the residuals of k extra stage-1
             models, each trained on the other folds of the training faces (split by
             meta["identity"] where known) for fold_max_steps (0 -> stage1's budget) and run on its
             own fold, so every training face, real ones included, gets a held-out residual
    eval:    thresholds, batch_size, sets ({name: dataset spec}: evaluated beside the test set,
             e.g. the real held-out faces; written to eval_<name>/eval.json)

A dataset spec is one of ``{kind: synthetic, num, seed, image_size, pose, cache_dir}``,
``{kind: scan, num, seed, image_size, pose, cache_dir, root}`` (train.data.scan.ScanFaces: renders of
a real textured face scan with exact labels; ``root`` holds the extracted menpo3d ``james.*`` files),
``{kind: real, root, split (train | test | all), sources}`` (train.data.real.RealFaces: 68 teacher
points; for aflw19 reduced to 19 by model_store.meanshape.aflw19_from_68),
``{kind: repose, root, mesh3d, per_face, seed, image_size, yaw_max, pitch_max, outward, cache_dir}``
(train.data.repose.ReposedFaces: the real cache's training faces turned in 3-D on their MediaPipe mesh,
labels carried by the surface; ``mesh3d`` default ``<root>/../repose/mesh3d.npz``),
``{kind: 300w, root, split}``, ``{kind: aflw, mat, images, split}``,
``{kind: wflw, root, split}`` (train.data.wflw: the 98 published points read as ibug68 or aflw19), or
``{kind: mix, parts: [{name, repeat, <dataset spec>}, ...]}`` (the parts concatenated, each
``repeat`` times; ``name`` becomes the samples' ``meta["subset"]`` for the per-subset breakdowns).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "apply_overrides", "load_config", "parse_override", "resolve", "save_config"]

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

_STAGE_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "architecture": "cnn6",
    "model_kwargs": {},
    # resnet50: a local torchvision-format checkpoint; cnn6/cnn7: a published stage's ONNX file (warm start)
    "pretrained": None,
    "freeze_bn": False,  # batch norms in eval mode while training (fine-tuning a warm start)
    "crop_rule": {"scale": 1.25, "shift_x": 0.0, "shift_y": 0.0, "roll": "eyes"},  # roll: eyes | blend
    "normalisation": {"mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0]},
    "loss": {"name": "wing", "w": 10.0, "eps": 2.0},
    "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "momentum": 0.9},
    "schedule": {"warmup_steps": 100, "min_lr_ratio": 0.01},  # linear warm-up, cosine decay
    "epochs": 10,
    "max_steps": 0,  # > 0: train exactly this many steps (overrides epochs; a fixed budget)
    "batch_size": 32,
    "grad_clip": 10.0,
    "eval_interval": 0,  # steps between validations; 0 = once per epoch or every total/10 steps if sooner
    "num_workers": 0,
    "amp": False,  # bfloat16 autocast on CUDA
    # None, or {ref, cap}: each face's loss weighted by train.losses.normaliser_weights (the NME's units)
    "face_weight": None,
    # 0, or a decay in (0, 1) (e.g. 0.999): validate, keep (best.pt) and export an exponential moving
    # average of the weights, updated after every step; last.pt carries the trained weights too, to resume
    "ema": 0.0,
    "augment": None,  # None -> data.augment; a mapping -> this stage's own AugmentConfig fields
    # stage 2 only: where its training crops' re-alignment points come from (see the module docstring)
    "init": {"mode": "train_predictions", "data": None, "mirror": True, "folds": 0, "fold_max_steps": 0},
}

INIT_MODES = ("train_predictions", "heldout_residuals", "kfold_residuals")

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "out_dir": "runs/run",
    "device": "auto",
    "num_threads": 0,  # torch.set_num_threads when > 0
    "resume": False,
    "data": {
        "scheme": "ibug68",
        "train": {"kind": "synthetic", "num": 1000, "seed": 1},
        "val": {"kind": "synthetic", "num": 100, "seed": 2},
        "test": None,  # None -> the validation set
        "pdb": {"enabled": True, "num_bins": 9},
        "augment": {},  # AugmentConfig fields; {} = its defaults
    },
    "stage1": copy.deepcopy(_STAGE_DEFAULTS),
    "stage2": {**copy.deepcopy(_STAGE_DEFAULTS), "architecture": "cnn7"},
    "eval": {"thresholds": [0.08, 0.10], "batch_size": 64, "sets": {}},
}

# sub-trees whose keys are free-form (passed through to a constructor)
_FREE = {
    ("data", "train"),
    ("data", "val"),
    ("data", "test"),
    ("data", "augment"),
    ("stage1", "model_kwargs"),
    ("stage2", "model_kwargs"),
    ("stage1", "loss"),
    ("stage2", "loss"),
    ("stage1", "optim"),
    ("stage2", "optim"),
    ("stage1", "augment"),
    ("stage2", "augment"),
    ("stage1", "face_weight"),
    ("stage2", "face_weight"),
    ("stage1", "init", "data"),
    ("stage2", "init", "data"),
    ("eval", "sets"),
}


def _merge(base: dict[str, Any], new: Mapping[str, Any], path: tuple[str, ...] = ()) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in new.items():
        here = (*path, key)
        if path and path in _FREE:
            out[key] = copy.deepcopy(value)
            continue
        if key not in out:
            raise KeyError(f"unknown config key {'.'.join(here)!r}")
        if isinstance(out[key], dict) and isinstance(value, Mapping) and here not in _FREE:
            out[key] = _merge(out[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"stage1.optim.lr=3e-4"`` -> (["stage1", "optim", "lr"], 0.0003); values parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError(f"bad override key {key!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads "3e-4" as a string
        value = float(value)
    return parts, value


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys) to a copy of ``config``; unknown keys -> KeyError
    except inside free-form sub-trees (dataset specs, loss/optim parameters, model kwargs)."""
    out = copy.deepcopy(dict(config))
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            free = tuple(parts[: i + 1]) in _FREE or tuple(parts[:i]) in _FREE
            if not isinstance(node, dict) or (part not in node and not free):
                raise KeyError(f"unknown config key {'.'.join(parts[: i + 1])!r}")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        last = parts[-1]
        free = tuple(parts[:-1]) in _FREE
        if not isinstance(node, dict) or (last not in node and not free):
            raise KeyError(f"unknown config key {'.'.join(parts)!r}")
        node[last] = value
    return out


def resolve(raw: Mapping[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults <- ``raw`` <- ``overrides``; checks the result. Returns a new dict."""
    cfg = _merge(DEFAULTS, raw)
    cfg = apply_overrides(cfg, overrides)
    _check(cfg)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config file and resolve it (see :func:`resolve`)."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return resolve(raw, overrides)


def save_config(config: Mapping[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(config), f, sort_keys=False)


def _check(cfg: Mapping[str, Any]) -> None:
    if cfg["data"]["scheme"] not in {"ibug68", "aflw19"}:
        raise ValueError(f"data.scheme must be ibug68 or aflw19, got {cfg['data']['scheme']!r}")
    for key in ("train", "val"):
        spec = cfg["data"][key]
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ValueError(f"data.{key} needs a dataset spec with a 'kind'")
    for name in ("stage1", "stage2"):
        st = cfg[name]
        if name == "stage1" and not st["enabled"]:
            raise ValueError("stage1 cannot be disabled")
        if st["epochs"] <= 0 or st["batch_size"] <= 0:
            raise ValueError(f"{name}: epochs and batch_size must be positive")
        if "name" not in st["loss"]:
            raise ValueError(f"{name}.loss needs a name")
        if st["augment"] is not None and not isinstance(st["augment"], Mapping):
            raise ValueError(f"{name}.augment must be null or a mapping of AugmentConfig fields")
        if st["init"]["mode"] not in INIT_MODES:
            raise ValueError(f"{name}.init.mode must be one of {INIT_MODES}, got {st['init']['mode']!r}")
        if st["init"]["mode"] == "kfold_residuals" and int(st["init"]["folds"]) < 2:
            raise ValueError(f"{name}.init: kfold_residuals needs folds >= 2")
        if not 0.0 <= float(st["ema"]) < 1.0:
            raise ValueError(f"{name}.ema must be 0 (off) or a decay in (0, 1), got {st['ema']!r}")
        fw = st["face_weight"]
        if fw is not None and (not isinstance(fw, Mapping) or set(fw) != {"ref", "cap"}):
            raise ValueError(f"{name}.face_weight must be null or {{ref, cap}}, got {fw!r}")
        roll = st["crop_rule"].get("roll", "eyes")
        if roll not in ("eyes", "blend"):
            raise ValueError(f"{name}.crop_rule.roll must be eyes or blend, got {roll!r}")
    for set_name, spec in (cfg["eval"].get("sets") or {}).items():
        if not isinstance(spec, Mapping) or "kind" not in spec:
            raise ValueError(f"eval.sets.{set_name} needs a dataset spec with a 'kind'")
    if cfg["device"] not in {"auto", "cpu", "cuda"}:
        raise ValueError("device must be auto, cpu or cuda")
