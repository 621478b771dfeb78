"""The plan of ``wingmark compare``: every run as a key, its config, and whether it is finished.

A run is one network (or cascade) trained with one seed: ``"loss_wing/s0"`` is CNN-6 with the Wing
loss and seed 0, in ``OUT/loss_wing/s0/``. A run is finished when its checkpoints are complete and its
evaluation (``compare_eval.json``, written by tools.studies.compare) exists; finished runs are never
retrained nor re-evaluated, so the comparison can stop and continue across sessions.

Settings (Feng et al. 2018):

* ``losses``: CNN-6 with L2, L1, smooth L1, Wing (w=10, eps=2) and Adaptive Wing (Wang et al. 2019),
  PDB on; 3 seeds for L1 and Wing (the paper's closest pair), 2 for the others;
* ``pdb``: CNN-6 + Wing with PDB off, against the Wing runs above (PDB on);
* ``cascade``: CNN-6 + CNN-7, stage 2 trained on top of a Wing run's finished stage 1 (copied, not
  retrained), against that one-stage run;
* ``wing_grid``: Wing's ``w`` / ``eps`` around the paper's (10, 2) at the 64 px input, one seed each.

Runs are ordered by seed round: every setting's first seed before any second seed, so a comparison
cut short still has one run of every setting.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EVAL_FILE",
    "GROUPS",
    "LOSS_SEEDS",
    "WING",
    "WING_GRID",
    "PlannedRun",
    "config_digest",
    "is_finished",
    "make_plan",
    "run_config",
    "run_dir",
    "stage_complete",
]

#: the per-run evaluation written when a run finishes (its presence marks the run finished)
EVAL_FILE = "compare_eval.json"
#: the paper's Wing setting
WING: dict[str, Any] = {"name": "wing", "w": 10.0, "eps": 2.0}
#: stage-1 losses and their number of seeds (L1 and Wing, the pair the paper separates most finely, get 3)
LOSS_SEEDS: dict[str, int] = {"wing": 3, "l1": 3, "smooth_l1": 2, "l2": 2, "adaptive_wing": 2}
#: Wing (w, eps) points around the paper's (10, 2) at 64 px: one parameter moved at a time
WING_GRID: tuple[tuple[float, float], ...] = ((5.0, 2.0), (15.0, 2.0), (10.0, 1.0), (10.0, 3.0))
GROUPS = ("losses", "pdb", "cascade", "wing_grid")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison."""

    setting: str  # e.g. "loss_wing", "pdb_off", "cascade", "wing_w5_e2"
    group: str  # one of GROUPS
    seed: int
    loss: Mapping[str, Any] = field(default_factory=lambda: dict(WING))
    pdb: bool = True
    stages: int = 1
    stage1_from: str | None = None  # key of the run whose finished stage 1 this run reuses

    @property
    def key(self) -> str:
        return f"{self.setting}/s{self.seed}"


def _loss_spec(name: str) -> dict[str, Any]:
    return dict(WING) if name == "wing" else {"name": name}


def make_plan(
    *,
    loss_seeds: Mapping[str, int] | None = None,
    pdb_seeds: int = 2,
    cascade_seeds: int = 2,
    grid: Sequence[tuple[float, float]] = WING_GRID,
) -> list[PlannedRun]:
    """Every run, ordered by seed round (all first seeds, then all second seeds, ...), grid last.

    The PDB-off and cascade runs pair with the Wing runs of the same seed, so they need at most as
    many seeds as Wing has.
    """
    seeds = dict(LOSS_SEEDS if loss_seeds is None else loss_seeds)
    wing_seeds = seeds.get("wing", 0)
    if max(pdb_seeds, cascade_seeds) > wing_seeds:
        raise ValueError(f"the PDB-off and cascade runs pair with Wing runs: at most {wing_seeds} seeds")
    rounds = max([*seeds.values(), pdb_seeds, cascade_seeds, 0])
    plan: list[PlannedRun] = []
    for seed in range(rounds):
        for name, n in seeds.items():
            if seed < n:
                plan.append(PlannedRun(f"loss_{name}", "losses", seed, _loss_spec(name)))
        if seed < pdb_seeds:
            plan.append(PlannedRun("pdb_off", "pdb", seed, dict(WING), pdb=False))
        if seed < cascade_seeds:
            plan.append(
                PlannedRun("cascade", "cascade", seed, dict(WING), stages=2, stage1_from=f"loss_wing/s{seed}")
            )
    for w, eps in grid:
        if (w, eps) == (WING["w"], WING["eps"]):
            continue  # the paper's point is the loss_wing setting
        plan.append(PlannedRun(f"wing_w{w:g}_e{eps:g}", "wing_grid", 0, {"name": "wing", "w": w, "eps": eps}))
    keys = [r.key for r in plan]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate run keys in the plan")
    return plan


def run_dir(out_root: Path, run: PlannedRun) -> Path:
    return out_root / run.setting / f"s{run.seed}"


def run_config(
    base: Mapping[str, Any], run: PlannedRun, *, steps: int, stage2_steps: int, out_root: Path
) -> dict[str, Any]:
    """The resolved config of ``run``: ``base`` with the run's loss, PDB, seed, stages and budget.

    ``resume`` is on, so an interrupted run continues from its ``last.pt``. About 20 validations per
    stage, so the validation curve shows whether the budget has converged.
    """
    cfg = copy.deepcopy(dict(base))
    cfg["name"] = f"compare-{run.setting}-s{run.seed}"
    cfg["out_dir"] = str(run_dir(out_root, run))
    cfg["seed"] = int(run.seed)
    cfg["resume"] = True
    cfg["data"]["pdb"]["enabled"] = bool(run.pdb)
    cfg["stage1"]["loss"] = dict(run.loss)
    cfg["stage1"]["max_steps"] = int(steps)
    cfg["stage1"]["eval_interval"] = max(1, steps // 20)
    cfg["stage2"]["enabled"] = run.stages == 2
    cfg["stage2"]["max_steps"] = int(stage2_steps)
    cfg["stage2"]["eval_interval"] = max(1, stage2_steps // 20)
    return cfg


#: the stage keys that define an experiment (a new default key elsewhere does not orphan finished runs)
_STAGE_KEYS = (
    "architecture",
    "pretrained",
    "crop_rule",
    "augment",
    "loss",
    "optim",
    "schedule",
    "max_steps",
    "batch_size",
    "init",
)


def config_digest(cfg: Mapping[str, Any]) -> str:
    """A short hash of what defines a run (seed, data, the trained stages' recipe and budget): a finished
    run is reused only if its digest equals the planned one."""
    stages = [cfg["stage1"]] + ([cfg["stage2"]] if cfg["stage2"]["enabled"] else [])
    core = {
        "seed": cfg["seed"],
        "data": cfg["data"],
        "stages": [{k: st.get(k) for k in _STAGE_KEYS} for st in stages],
    }
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_complete(path: Path, steps: int) -> bool:
    """``stageN/`` holds a best checkpoint and a ``last.pt`` marked completed at ``>= steps``."""
    import torch

    last, best = path / "last.pt", path / "best.pt"
    if not (last.is_file() and best.is_file()):
        return False
    ck = torch.load(last, map_location="cpu", weights_only=False)
    return bool(ck.get("completed")) and int(ck.get("step", 0)) >= steps


def is_finished(out_root: Path, run: PlannedRun, digest: str) -> bool:
    """The run's evaluation exists, was made from this config (digest) and its checkpoints exist.

    A digest that differs (another budget, another base config) is an error, not a silent reuse.
    """
    folder = run_dir(out_root, run)
    path = folder / EVAL_FILE
    if not path.is_file():
        return False
    found = json.loads(path.read_text(encoding="utf-8")).get("config_digest")
    if found != digest:
        raise ValueError(
            f"{path} was made with another config (digest {found}, planned {digest}): "
            "use another --out for another budget or base config"
        )
    return all((folder / f"stage{k}" / "best.pt").is_file() for k in range(1, run.stages + 1))
