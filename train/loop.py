"""The training loop: one or two stages, checkpoints, resume, validation NME, DDP.

Checkpoint format (``<out_dir>/stage<k>/best.pt`` and ``last.pt``, a dict for ``torch.load``),
read by the export engineer (train/export) and by ``wingmark eval``:

    "config"         resolved config (dict), everything needed to rebuild model and data
    "model"          state_dict of the bare network (no DDP ``module.`` prefix); with ``stage.ema``
                     on, of its moving average (what is validated and exported)
    "architecture"   registry name ("cnn6", "cnn7", "resnet50")
    "model_kwargs"   extra create_model kwargs (e.g. {"input_size": 224}); {} for cnn6/cnn7
    "num_points"     K; the network outputs [N, 2K] in crop units (model_store convention)
    "scheme"         "ibug68" | "aflw19"
    "input_size"     crop side S in pixels
    "crop_rule"      model_store.geometry.CropRule fields (dict); stage 1 crops from the tight
                     face box, stage 2 from crop_matrix_from_points(stage-1 points)
    "normalisation"  model_store.preprocess.Normalisation fields (dict)
    "stage"          1 or 2
    "val"            {"nme": mean validation NME (fraction), "step": ..., "epoch": ..., "n": ...}
    resume state (export ignores it): "step", "epoch", "best_nme", "completed", and in last.pt only
                     "optimizer" and, with ``stage.ema`` on, "model_trained" (the trained weights)

Run directory: config.resolved.yaml, metrics.jsonl (one JSON object per log/eval line),
curves.png (loss and validation NME), stage1/ and stage2/ checkpoints, eval.json + ced.png
(final evaluation on the test set, see :func:`evaluate_run`).

Multi-GPU: launched by ``torchrun`` (WORLD_SIZE > 1) each process trains on its
DistributedSampler shard through DistributedDataParallel; rank 0 validates, logs and saves.
Without torchrun the same code runs as world size 1 on CPU or one GPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from model_store.geometry import CropRule
from model_store.preprocess import Normalisation
from model_store.schemes import Scheme, get_scheme
from train.config import save_config
from train.data.types import Sample
from train.dataset import CropDataset, EvalCrops, load_samples, make_eval_crops, training_indices
from train.losses import landmark_loss, make_loss, normaliser_weights
from train.metrics import DEFAULT_THRESHOLDS, grouped_summary, nme_per_sample, yaw_bin_labels
from train.models import create_model
from train.models.cascade import predict_crops

__all__ = [
    "Runtime",
    "build_stage_model",
    "cascade_errors",
    "cascade_points",
    "evaluate_run",
    "fold_assignment",
    "heldout_residuals",
    "kfold_residuals",
    "load_checkpoint",
    "lr_at",
    "run_stage_paths",
    "sample_groups",
    "setup_runtime",
    "stage_augment",
    "train",
    "train_stage",
]


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(device: str = "auto") -> Runtime:
    """World size 1 unless launched by torchrun (WORLD_SIZE > 1): then init the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(rank, local_rank, world, dev)


def _barrier(rt: Runtime) -> None:
    if rt.distributed:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- models / checkpoints


def build_stage_model(
    stage_cfg: Mapping[str, Any], num_points: int, run_dir: Path | None = None
) -> nn.Module:
    """Registry model for a stage config; loads ``pretrained`` when given.

    ``pretrained`` is a file for the architecture's own loader (an ONNX stage, a torchvision or face-api
    checkpoint), a training checkpoint (``.pt``) of the same architecture (a narrower face-api network is
    widened), or ``stage1``: this run's own
    trained first stage (``run_dir/stage1/best.pt``), so a second stage of the same architecture starts
    from what the first one learned.
    """
    model = create_model(stage_cfg["architecture"], num_points, **dict(stage_cfg.get("model_kwargs") or {}))
    pretrained = stage_cfg.get("pretrained")
    if pretrained == "stage1":
        if run_dir is None:
            raise ValueError("pretrained: stage1 needs the run directory")
        pretrained = str(run_dir / "stage1" / "best.pt")
    if pretrained and str(pretrained).endswith(".pt"):
        ckpt = torch.load(Path(pretrained), map_location="cpu", weights_only=False)
        if ckpt["architecture"] != stage_cfg["architecture"] or int(ckpt["num_points"]) != num_points:
            raise ValueError(f"{pretrained}: a {ckpt['architecture']} for {ckpt['num_points']} points")
        load_weights = getattr(model, "load_weights", None)  # e.g. face-api: widens a narrower network
        if load_weights is not None:
            load_weights({k: v.numpy() for k, v in ckpt["model"].items()})
        else:
            model.load_state_dict(ckpt["model"])
    elif pretrained:
        loader = getattr(model, "load_pretrained", None)
        if loader is None:
            raise ValueError(f"{stage_cfg['architecture']} has no pretrained loader")
        loader(pretrained)
    return model


def _face_weights(
    samples: Sequence[Sample], scheme: Scheme, spec: Mapping[str, Any] | None
) -> np.ndarray | None:
    """A stage's ``face_weight`` ({ref, cap} or None) -> one loss weight per training sample, or None."""
    if spec is None:
        return None
    points = np.stack([np.asarray(s.points, dtype=np.float64) for s in samples])  # (N, K, 2)
    return normaliser_weights(points, scheme, float(spec["ref"]), float(spec["cap"]))


def _set_train_mode(model: nn.Module, stage_cfg: Mapping[str, Any]) -> None:
    """``model.train()``, with its batch norms kept in eval mode when the stage sets ``freeze_bn``."""
    model.train()
    if stage_cfg.get("freeze_bn"):
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _crop_rule(stage_cfg: Mapping[str, Any]) -> CropRule:
    return CropRule.from_dict(stage_cfg["crop_rule"])


def _normalisation(stage_cfg: Mapping[str, Any]) -> Normalisation:
    n = stage_cfg["normalisation"]
    return Normalisation(mean=tuple(float(v) for v in n["mean"]), std=tuple(float(v) for v in n["std"]))  # type: ignore[arg-type]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a stage network from a checkpoint file alone; returns (model in eval mode, checkpoint)."""
    ckpt: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = create_model(
        ckpt["architecture"], int(ckpt["num_points"]), **dict(ckpt.get("model_kwargs") or {})
    )
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def _checkpoint(
    cfg: Mapping[str, Any],
    stage: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    epoch: int,
    best_nme: float,
    val: Mapping[str, Any],
    completed: bool,
    trained: nn.Module | None = None,
) -> dict[str, Any]:
    """A stage's checkpoint; ``model`` is the network validated and kept (the moving average where
    ``stage.ema`` is on, with the trained network as ``trained``, stored as "model_trained" to resume)."""
    st = cfg[f"stage{stage}"]
    extra = (
        {}
        if trained is None
        else {"model_trained": {k: v.detach().cpu() for k, v in trained.state_dict().items()}}
    )
    return extra | {
        "config": dict(cfg),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "architecture": st["architecture"],
        "model_kwargs": dict(st.get("model_kwargs") or {}),
        "num_points": int(model.num_points),  # type: ignore[arg-type]
        "scheme": cfg["data"]["scheme"],
        "input_size": int(model.input_size),  # type: ignore[arg-type]
        "crop_rule": _crop_rule(st).to_dict(),
        "normalisation": _normalisation(st).to_dict(),
        "stage": stage,
        "val": dict(val),
        "step": step,
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "best_nme": best_nme,
        "completed": completed,
    }


def weight_average(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights, batch-norm statistics included:
    ``avg = decay * avg + (1 - decay) * weights`` at each :meth:`~AveragedModel.update_parameters`,
    starting from a copy of ``model``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- schedule / logging


def lr_at(step: int, total: int, base_lr: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio * base_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _make_optimizer(params: Any, spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = spec.get("name", "adamw")
    lr = float(spec.get("lr", 1e-3))
    wd = float(spec.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=float(spec.get("momentum", 0.9)), weight_decay=wd, nesterov=True
        )
    raise ValueError(f"unknown optimizer {name!r} (adamw | adam | sgd)")


class _MetricsLog:
    """Append-only metrics.jsonl (main process only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, **row: Any) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **row}) + "\n")


# --------------------------------------------------------------------------- evaluation helpers


def _stage_nme(
    model: nn.Module, crops: EvalCrops, norm: Normalisation, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Predict a fixed eval set: (image-space points [N, K, 2], NME per face [N])."""
    crop_pts = predict_crops(model, crops.crops, norm, batch_size=batch_size, device=device)  # (N, K, 2)
    pts = crops.to_image(crop_pts)  # (N, K, 2) image px
    return pts, nme_per_sample(pts, crops.gt, crops.normaliser)


def _predict_points(
    model: nn.Module,
    samples: Sequence[Sample],
    scheme: Scheme,
    stage_cfg: Mapping[str, Any],
    batch_size: int,
    device: torch.device,
    *,
    stage_index: int = 0,
    previous: np.ndarray | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """Image-space predictions ``[N, K, 2]`` of one stage on deterministic crops (chunked: bounded memory)."""
    size = int(model.input_size)  # type: ignore[arg-type]
    rule, norm = _crop_rule(stage_cfg), _normalisation(stage_cfg)
    out = []
    for i in range(0, len(samples), chunk):
        prev = None if previous is None else previous[i : i + chunk]
        crops = make_eval_crops(
            samples[i : i + chunk], scheme, size, rule, stage_index=stage_index, previous=prev
        )
        crop_pts = predict_crops(model, crops.crops, norm, batch_size=batch_size, device=device)
        out.append(crops.to_image(crop_pts))
    return np.concatenate(out)


# --------------------------------------------------------------------------- one stage


def stage_augment(cfg: Mapping[str, Any], stage: int) -> Any:
    """The ``AugmentConfig`` of a stage: its own ``augment`` mapping, else ``data.augment``."""
    from train.data.augment import AugmentConfig

    own = cfg[f"stage{stage}"].get("augment")
    fields = dict(own) if own is not None else dict(cfg["data"].get("augment") or {})
    for key in ("scale", "contrast", "saturation", "gamma"):  # YAML lists -> the dataclass's tuples
        if key in fields and isinstance(fields[key], list):
            fields[key] = tuple(float(v) for v in fields[key])
    return AugmentConfig(**fields)


def heldout_residuals(
    cfg: Mapping[str, Any],
    model1: nn.Module,
    ck1: Mapping[str, Any],
    device: torch.device,
    *,
    progress: bool = True,
) -> Any:
    """Stage 1 run on the held-out faces of ``stage2.init.data`` (default ``data.val``): its errors
    as a ``ResidualBank`` in the stage-2 crop frame (crop units)."""
    from train.data.residuals import ResidualBank

    scheme = get_scheme(cfg["data"]["scheme"])
    init = cfg["stage2"]["init"]
    spec = init.get("data") or cfg["data"]["val"]
    heldout = load_samples(spec, scheme.name, progress=progress)
    pred = _predict_points(
        model1, heldout, scheme, ck1["config"]["stage1"], int(cfg["eval"]["batch_size"]), device
    )  # (N, K, 2) image px
    gt = np.stack([s.points for s in heldout]).astype(np.float64)
    return ResidualBank.from_predictions(
        pred, gt, scheme, _crop_rule(cfg["stage2"]), mirror=bool(init.get("mirror", True))
    )


def fold_assignment(samples: Sequence[Sample], folds: int, seed: int) -> dict[int, int]:
    """``id(sample) -> fold`` for the distinct samples (repeats of a mix share one object): faces of
    one ``meta["identity"]`` (real faces) fall in one fold, other faces are their own group."""
    keys: dict[int, str] = {}
    for s in samples:
        ident = s.meta.get("identity")
        keys[id(s)] = f"identity:{ident}" if ident is not None else f"sample:{id(s)}"
    groups = sorted(set(keys.values()), key=lambda k: (not k.startswith("identity:"), k))
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of_group = {groups[j]: rank % folds for rank, j in enumerate(order)}
    return {obj: fold_of_group[key] for obj, key in keys.items()}


def kfold_residuals(
    cfg: Mapping[str, Any],
    rt: Runtime,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out: Path,
    *,
    progress: bool = True,
) -> Any:
    """Train ``stage2.init.folds`` extra stage-1 models (``<out>/folds/fold<k>/``), each on the other
    folds, and collect their residuals on their own fold: a ``ResidualBank`` with one held-out
    residual per distinct training face."""
    import copy

    from train.data.residuals import ResidualBank

    init = cfg["stage2"]["init"]
    k = int(init["folds"])
    scheme = get_scheme(cfg["data"]["scheme"])
    fold_of = fold_assignment(train_samples, k, int(cfg["seed"]) + 7)
    distinct = list({id(s): s for s in train_samples}.values())
    fold_cfg = copy.deepcopy(dict(cfg))
    if int(init.get("fold_max_steps") or 0) > 0:
        fold_cfg["stage1"] = {**fold_cfg["stage1"], "max_steps": int(init["fold_max_steps"])}
    preds, gts = [], []
    for f in range(k):
        part = [s for s in train_samples if fold_of[id(s)] != f]
        held = [s for s in distinct if fold_of[id(s)] == f]
        if not held or not part:
            continue
        if rt.is_main and progress:
            print(
                f"stage2 residuals: fold {f + 1}/{k}, stage 1 on {len(part)} crops, "
                f"held out {len(held)} faces"
            )
        fold_dir = out / "folds" / f"fold{f}"
        if rt.is_main:
            fold_dir.mkdir(parents=True, exist_ok=True)
            if not cfg.get("resume") and (fold_dir / "metrics.jsonl").exists():
                (fold_dir / "metrics.jsonl").unlink()
        _barrier(rt)
        best = train_stage(fold_cfg, 1, rt, part, val_samples, out_dir=fold_dir, progress=progress)
        model, ck = load_checkpoint(best, rt.device)
        preds.append(
            _predict_points(
                model, held, scheme, ck["config"]["stage1"], int(cfg["eval"]["batch_size"]), rt.device
            )
        )
        gts.append(np.stack([s.points for s in held]).astype(np.float64))
    if not preds:
        raise ValueError("kfold_residuals: no fold had both training and held-out faces")
    return ResidualBank.from_predictions(
        np.concatenate(preds),
        np.concatenate(gts),
        scheme,
        _crop_rule(cfg["stage2"]),
        mirror=bool(init["mirror"]),
    )


def train_stage(
    cfg: Mapping[str, Any],
    stage: int,
    rt: Runtime,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    init_train: np.ndarray | None = None,
    init_val: np.ndarray | None = None,
    residuals: Any = None,
    out_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train stage ``stage`` (1 or 2) and return the path of its best checkpoint.

    ``init_train`` / ``init_val`` ``[N, K, 2]``: stage-1 image-space predictions from which
    stage-2 crops are re-aligned (``init_val`` required for stage 2, and ``init_train`` unless
    ``residuals``, a ``train.data.residuals.ResidualBank``, perturbs the ground truth instead).
    """
    st = cfg[f"stage{stage}"]
    if stage > 1 and init_train is None and residuals is None:
        raise ValueError(f"stage{stage} needs init_train (stage-1 predictions) or residuals")
    scheme = get_scheme(cfg["data"]["scheme"])
    out = Path(out_dir if out_dir is not None else cfg["out_dir"])
    stage_dir = out / f"stage{stage}"
    log = _MetricsLog(out / "metrics.jsonl" if rt.is_main else None)
    seed = int(cfg["seed"]) * 1000 + stage
    seed_everything(seed)

    # ---- model, data, optimiser
    model = build_stage_model(st, scheme.num_points, out).to(rt.device)
    size = int(model.input_size)  # type: ignore[arg-type]
    rule, norm = _crop_rule(st), _normalisation(st)
    augment = stage_augment(cfg, stage)
    indices = training_indices(train_samples, cfg["data"]["pdb"], seed)
    dataset = CropDataset(
        train_samples,
        indices,
        scheme,
        size,
        rule,
        norm,
        augment,
        seed,
        init_points=init_train,
        residuals=residuals,
        face_weights=_face_weights(train_samples, scheme, st["face_weight"]),
    )
    if dataset.face_weights is not None:  # what the weighting does to this mix, in the run's log
        fw = dataset.face_weights[dataset.indices]
        cap = float(st["face_weight"]["cap"])
        log.write(kind="face_weight", stage=stage, mean=float(fw.mean()), above_1=float((fw > 1).mean()),
                  at_cap=float((fw >= cap).mean()))  # fmt: skip
    sampler: DistributedSampler[Any] | RandomSampler
    if rt.distributed:
        sampler = DistributedSampler(dataset, rt.world_size, rt.rank, shuffle=True, seed=seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    batch_size = int(st["batch_size"])
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=int(st["num_workers"]),
        drop_last=True,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=False,  # workers re-created each epoch so they see dataset.set_epoch()
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"stage{stage}: {len(dataset)} training crops < batch size {batch_size}")
    total = int(st["max_steps"]) or int(st["epochs"]) * steps_per_epoch
    # 0 -> once per epoch, but at least ~10 validations per stage
    eval_interval = int(st["eval_interval"]) or max(1, min(steps_per_epoch, math.ceil(total / 10)))
    optimizer = _make_optimizer(model.parameters(), st["optim"])
    penalty = make_loss(st["loss"])
    base_lr = float(st["optim"].get("lr", 1e-3))
    warmup = int(st["schedule"].get("warmup_steps", 0))
    min_ratio = float(st["schedule"].get("min_lr_ratio", 0.0))
    val_crops = make_eval_crops(
        val_samples, scheme, size, rule, stage_index=stage - 1, previous=init_val
    )  # fixed for the whole stage
    eval_bs = int(cfg["eval"]["batch_size"])
    if rt.is_main and progress:
        print(
            f"stage{stage}: {st['architecture']} {size}x{size}, {len(dataset)} training crops per epoch "
            f"({len(train_samples)} faces, PDB {'on' if cfg['data']['pdb'].get('enabled') else 'off'}), "
            f"{total} steps of {batch_size} x {rt.world_size} process(es), {len(val_samples)} val faces"
        )

    # ---- resume
    step, best_nme, last_val = 0, math.inf, {}
    last_path, best_path = stage_dir / "last.pt", stage_dir / "best.pt"
    decay = float(st["ema"])
    ema: AveragedModel | None = None
    if cfg.get("resume") and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt.get("model_trained", ckpt["model"]))
        if decay > 0:  # the average goes on from the kept one (a run without it: from the weights)
            ema = weight_average(model, decay)
            ema.module.load_state_dict(ckpt["model"])
            ema.n_averaged.fill_(int(ckpt["step"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best_nme, last_val = int(ckpt["step"]), float(ckpt["best_nme"]), dict(ckpt["val"])
        if ckpt.get("completed") and step >= total and best_path.exists():  # a larger budget continues
            if rt.is_main:
                print(
                    f"stage{stage}: already complete at step {step} (best val NME {best_nme:.4f}), skipping"
                )
            return best_path
        if rt.is_main:
            print(f"stage{stage}: resuming at step {step}/{total}")

    if decay > 0 and ema is None:
        ema = weight_average(model, decay)
    kept: nn.Module = model if ema is None else ema.module  # the network validated, kept and exported
    resumed_at = step  # its evaluation is in the checkpoint already
    train_model: nn.Module = model
    if rt.distributed:
        train_model = DistributedDataParallel(
            model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None
        )
    use_amp = bool(st["amp"]) and rt.device.type == "cuda"

    def evaluate_and_save(epoch: int, completed: bool) -> dict[str, Any]:
        nonlocal best_nme
        val: dict[str, Any] = dict(last_val)
        if rt.is_main:
            _, nme = _stage_nme(kept, val_crops, norm, eval_bs, rt.device)
            val = {"nme": float(nme.mean()), "step": step, "epoch": epoch, "n": len(nme)}
            log.write(kind="val", stage=stage, step=step, epoch=epoch, val_nme=val["nme"])
            ck = _checkpoint(
                cfg,
                stage,
                kept,
                optimizer,
                step=step,
                epoch=epoch,
                best_nme=best_nme,
                val=val,
                completed=completed,
                trained=None if ema is None else model,
            )
            if val["nme"] < best_nme:
                best_nme = ck["best_nme"] = val["nme"]
                no_resume = ("optimizer", "model_trained")
                _save_atomic({k: v for k, v in ck.items() if k not in no_resume}, best_path)
            _save_atomic(ck, last_path)
        _barrier(rt)
        return val

    # ---- the loop, in phases: lr -> eval/checkpoint -> forward/backward -> clip -> step -> log
    _set_train_mode(model, st)
    bar = tqdm(
        total=total,
        initial=step,
        desc=f"stage{stage} {st['architecture']}",
        disable=not (progress and rt.is_main),
    )
    running, seen, t0 = 0.0, 0, time.time()
    while step < total:
        epoch = step // steps_per_epoch
        dataset.set_epoch(epoch)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        skip = step % steps_per_epoch  # resuming mid-epoch
        for i, (x, y, w) in enumerate(loader):
            if i < skip:
                continue
            if step >= total:
                break
            # 1. learning rate
            lr = lr_at(step, total, base_lr, warmup, min_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # 2. evaluate / checkpoint
            if step > 0 and step % eval_interval == 0 and step != resumed_at:
                last_val = evaluate_and_save(epoch, completed=False)
                bar.set_postfix(
                    loss=f"{running / max(seen, 1):.3f}", val_nme=f"{last_val.get('nme', math.nan):.4f}"
                )
                _set_train_mode(model, st)
            # 3. forward / backward
            x = x.to(rt.device, non_blocking=True)  # (B, 3, S, S)
            y = y.to(rt.device, non_blocking=True)  # (B, 2K) crop units
            w = w.to(rt.device, non_blocking=True)  # (B, K) per-point weights
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else nullcontext()
            with ctx:
                pred = train_model(x)  # (B, 2K) crop units
            loss = landmark_loss(pred.float(), y, size, penalty, w)  # pixels of the S x S input
            if not torch.isfinite(loss):
                raise FloatingPointError(f"stage{stage}: loss is {float(loss)} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # 4. clip
            if float(st["grad_clip"]) > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(st["grad_clip"]))
            # 5. step
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            # 6. log
            running += float(loss.detach())
            seen += 1
            if step % 20 == 0 or step == total:
                log.write(
                    kind="train",
                    stage=stage,
                    step=step,
                    epoch=epoch,
                    lr=lr,
                    loss=running / seen,
                    imgs_per_s=seen * batch_size * rt.world_size / max(time.time() - t0, 1e-9),
                )
                bar.set_postfix(loss=f"{running / seen:.3f}", val_nme=f"{last_val.get('nme', math.nan):.4f}")
                running, seen, t0 = 0.0, 0, time.time()
            bar.update(1)
    bar.close()
    last_val = evaluate_and_save(total // steps_per_epoch, completed=True)
    if rt.is_main:
        print(f"stage{stage}: done, {total} steps, best val NME {best_nme:.4f} -> {best_path}")
    return best_path


# --------------------------------------------------------------------------- whole run


def train(cfg: Mapping[str, Any], *, progress: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train every enabled stage, then (``evaluate``) evaluate the run on the test set and plot the
    curves. Returns the eval report ({} without evaluation)."""
    rt = setup_runtime(cfg["device"])
    if int(cfg.get("num_threads") or 0) > 0:
        torch.set_num_threads(int(cfg["num_threads"]))
    out = Path(cfg["out_dir"])
    if rt.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.resolved.yaml")
        if not cfg.get("resume") and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
    _barrier(rt)
    scheme_name = cfg["data"]["scheme"]
    train_samples = load_samples(cfg["data"]["train"], scheme_name, progress=progress and rt.is_main)
    val_samples = load_samples(cfg["data"]["val"], scheme_name, progress=progress and rt.is_main)

    best1 = train_stage(cfg, 1, rt, train_samples, val_samples, progress=progress)
    if cfg["stage2"]["enabled"]:
        # stage-1 predictions on the training and validation sets: stage 2 trains on re-aligned crops
        model1, ck1 = load_checkpoint(best1, rt.device)
        scheme = get_scheme(scheme_name)
        bs = int(cfg["eval"]["batch_size"])
        init_train, residuals = None, None
        mode = cfg["stage2"]["init"]["mode"]
        if mode in {"heldout_residuals", "kfold_residuals"}:
            if mode == "heldout_residuals":
                residuals = heldout_residuals(cfg, model1, ck1, rt.device, progress=progress and rt.is_main)
            else:
                residuals = kfold_residuals(cfg, rt, train_samples, val_samples, out, progress=progress)
            if rt.is_main:
                residuals.save(out / "stage2" / "residuals.npz")
                stats = residuals.summary()
                _MetricsLog(out / "metrics.jsonl").write(kind="residuals", stage=2, **stats)
                if progress:
                    print(
                        f"stage2: {int(stats['n'])} held-out stage-1 residuals, mean point offset "
                        f"{stats['mean']:.4f} crop units (p90 {stats['p90']:.4f})"
                    )
        else:
            init_train = _predict_points(
                model1, train_samples, scheme, ck1["config"]["stage1"], bs, rt.device
            )
        init_val = _predict_points(model1, val_samples, scheme, ck1["config"]["stage1"], bs, rt.device)
        del model1
        train_stage(
            cfg,
            2,
            rt,
            train_samples,
            val_samples,
            init_train=init_train,
            init_val=init_val,
            residuals=residuals,
            progress=progress,
        )

    report: dict[str, Any] = {}
    if rt.is_main and evaluate:
        report = evaluate_run(out, progress=progress, device=rt.device)
        sets: dict[str, Any] = {}
        for set_name, spec in (cfg["eval"].get("sets") or {}).items():
            extra = evaluate_run(
                out, data_spec=spec, out_dir=out / f"eval_{set_name}", progress=progress, device=rt.device
            )
            sets[set_name] = {k: extra[k]["overall"] for k in extra if k.startswith("stage")}
        if sets:
            report["sets"] = sets
            (out / "eval_sets.json").write_text(json.dumps(sets, indent=2) + "\n", encoding="utf-8")
            if progress:
                for set_name, row in sets.items():
                    print(f"eval {set_name}: " + ", ".join(f"{k} NME {v['nme']:.4f}" for k, v in row.items()))
        from train.plots import plot_curves

        plot_curves(out / "metrics.jsonl", out / "curves.png")
    _barrier(rt)
    if rt.distributed:
        dist.destroy_process_group()
    return report


def run_stage_paths(run_dir: Path, which: str = "best") -> list[Path]:
    """The stage checkpoints of a run directory, in cascade order."""
    paths = [run_dir / f"stage{k}" / f"{which}.pt" for k in (1, 2)]
    found = [p for p in paths if p.exists()]
    if not found or found[0] != paths[0]:
        raise FileNotFoundError(f"no stage1/{which}.pt under {run_dir}")
    return found


def cascade_points(
    paths: Sequence[Path],
    samples: Sequence[Sample],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Landmarks ``[N, K, 2]`` (image px) after each stage of the cascade given by checkpoint ``paths``.

    Stage 1 crops from the tight landmark box, stage 2 from stage-1 predictions (as served).
    Returns (one array per stage, checkpoints without weights).
    """
    loaded = [load_checkpoint(p, device) for p in paths]
    scheme = get_scheme(loaded[0][1]["scheme"])
    points: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for k, (model, ck) in enumerate(loaded, start=1):
        previous = _predict_points(
            model,
            samples,
            scheme,
            ck["config"][f"stage{k}"],
            batch_size,
            torch.device(device),
            stage_index=k - 1,
            previous=previous,
        )
        points.append(previous)
    return points, [{k: v for k, v in ck.items() if k not in {"model", "optimizer"}} for _, ck in loaded]


def cascade_errors(
    paths: Sequence[Path],
    samples: Sequence[Sample],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Per-face NME ``[N]`` after each stage of the cascade given by checkpoint ``paths``
    (:func:`cascade_points`). Returns ({"stage1": [N], "stage2": [N]}, checkpoints without weights)."""
    points, ckpts = cascade_points(paths, samples, device=device, batch_size=batch_size)
    scheme = get_scheme(ckpts[0]["scheme"])
    gt = np.stack([s.points for s in samples]).astype(np.float64)  # (N, K, 2)
    boxes = np.stack([np.asarray(s.box, dtype=np.float64) for s in samples])  # (N, 4)
    normaliser = scheme.normaliser_distance(gt, boxes)  # (N,)
    return {f"stage{k}": nme_per_sample(p, gt, normaliser) for k, p in enumerate(points, start=1)}, ckpts


def sample_groups(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Labels for the breakdowns: ``subset`` (meta["subset"], else "all"), ``yaw`` (|yaw| bins) and,
    where the samples name one (the real faces), ``source``."""
    groups = {
        "subset": np.array([str(s.meta.get("subset", "all")) for s in samples], dtype=object),
        "yaw": yaw_bin_labels(np.array([float(s.meta.get("yaw", np.nan)) for s in samples])),
    }
    if any("source" in s.meta for s in samples):
        groups["source"] = np.array([str(s.meta.get("source", "-")) for s in samples], dtype=object)
    return groups


def evaluate_run(
    run_dir: str | Path,
    *,
    data_spec: Mapping[str, Any] | None = None,
    which: str = "best",
    thresholds: Sequence[float] | None = None,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's cascade on a dataset (default: the config's test set, else val set).

    Writes ``eval.json`` and ``ced.png`` to ``out_dir`` (default ``run_dir``); returns the report:
    per stage ("stage1", "stage2" = the cascade output) overall / per subset / per |yaw| bin
    summaries of the NME (normaliser: the scheme's), AUC and failure rate at each threshold;
    "final" is the last stage's overall summary.
    """
    run = Path(run_dir)
    paths = run_stage_paths(run, which)
    ck0 = torch.load(paths[0], map_location="cpu", weights_only=False)
    cfg = ck0["config"]
    spec = data_spec or cfg["data"].get("test") or cfg["data"]["val"]
    thr = tuple(thresholds or cfg.get("eval", {}).get("thresholds") or DEFAULT_THRESHOLDS)
    samples = load_samples(spec, ck0["scheme"], progress=progress)
    bs = int(cfg.get("eval", {}).get("batch_size", 64))
    errors, ckpts = cascade_errors(paths, samples, device=device, batch_size=bs)
    groups = sample_groups(samples)
    report: dict[str, Any] = {
        "run_dir": str(run),
        "checkpoint": which,
        "data": dict(spec),
        "scheme": ck0["scheme"],
        "thresholds": list(thr),
    }
    for k, ck in enumerate(ckpts, start=1):
        report[f"stage{k}"] = {
            "architecture": ck["architecture"],
            "val": ck["val"],
            **grouped_summary(errors[f"stage{k}"], groups, thr),
        }
    report["final"] = report[f"stage{len(ckpts)}"]["overall"]
    out = Path(out_dir) if out_dir is not None else run
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    from train.plots import plot_ced

    curves = {f"stage {k} ({ck['architecture']})": errors[f"stage{k}"] for k, ck in enumerate(ckpts, start=1)}
    plot_ced(
        curves, max(thr), out / "ced.png", title=f"CED, {cfg['name']} ({ck0['scheme']}, n={len(samples)})"
    )
    return report
