"""``wingmark compare``: the paper's comparisons (losses, PDB, one vs two stages) at a converged budget.

Feng et al. 2018 claim NME Wing < L1 < smooth L1 < L2 (Sec. 4), that pose-based data balancing helps
turned faces (Sec. 5.2) and that a second stage helps (Sec. 5.1). Every run trains from scratch on the
base config's data (default: ``train/configs/compare_ibug68.yaml``, the default CNN recipe's synthetic
+ real teacher-labelled faces); the runs, their seeds and order are the plan of
:mod:`tools.studies.compare_plan`.

* ``wingmark compare`` trains the unfinished runs one after another (an interrupted run continues
  from its ``last.pt``; finished runs are skipped), evaluates each as it finishes (synthetic test set
  with exact labels, and the config's ``eval.sets``, e.g. the real held-out faces with teacher labels)
  into ``OUT/<setting>/s<seed>/compare_eval.json``, and rewrites the report after every run.
  Several of these may share one ``OUT`` (``num_threads=1`` each on a small machine): a run is locked
  by the process training it, and the others take the next free one.
* ``wingmark compare --resume`` trains nothing: it rewrites the report from the evaluations that
  exist (a run whose checkpoints are complete but whose evaluation is missing is evaluated once).

The report (:mod:`tools.studies.compare_report`) goes to ``--docs``: ``comparison.md``,
``comparison.json`` and ``img/compare_*.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import train
from tools.studies.compare_plan import (
    EVAL_FILE,
    PlannedRun,
    config_digest,
    is_finished,
    make_plan,
    run_config,
    run_dir,
    stage_complete,
)

__all__ = ["eval_sets", "main", "run_metrics"]

_DEFAULT_CONFIG = Path(train.__file__).resolve().parent / "configs" / "compare_ibug68.yaml"


def eval_sets(base: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"synthetic": the test set (exact labels), **eval.sets}`` (e.g. ``real_test``: teacher labels)."""
    sets = {"synthetic": dict(base["data"].get("test") or base["data"]["val"])}
    sets.update({str(k): dict(v) for k, v in (base["eval"].get("sets") or {}).items()})
    return sets


def run_metrics(folder: Path, batch_sizes: Mapping[int, int]) -> dict[str, Any]:
    """From ``metrics.jsonl``: per stage, the validation curve ``[[step, nme], ...]`` and the seconds
    spent in training steps (summed from the logged throughput, so interruptions do not count)."""
    out: dict[str, Any] = {}
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        st = out.setdefault(f"stage{row.get('stage', 1)}", {"val_curve": [], "step_seconds": 0.0, "last": 0})
        if row.get("kind") == "val":
            st["val_curve"].append([int(row["step"]), float(row["val_nme"])])
        elif row.get("kind") == "train" and row.get("imgs_per_s"):
            # steps since the previous log line; after a resume the loop re-logs from its checkpoint
            # (train.loop logs every 20 steps), and the re-done steps did cost time
            step = int(row["step"])
            steps = step - st["last"] if 0 < step - st["last"] <= 20 else (step % 20 or 20)
            st["last"] = step
            st["step_seconds"] += (
                steps * batch_sizes.get(int(row.get("stage", 1)), 32) / float(row["imgs_per_s"])
            )
    for st in out.values():
        st.pop("last")
        st["step_seconds"] = round(st["step_seconds"], 1)
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _evaluate(
    folder: Path, run: PlannedRun, cfg: Mapping[str, Any], samples: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """Per-face NME of every stage on every set, with the faces' yaw; written as ``EVAL_FILE``."""
    from train.loop import cascade_errors, run_stage_paths

    paths = run_stage_paths(folder)[: run.stages]
    sets: dict[str, Any] = {}
    for name, faces in samples.items():
        errs, _ = cascade_errors(paths, faces, batch_size=int(cfg["eval"]["batch_size"]))
        sets[name] = {
            "errors": {k: [round(float(x), 6) for x in v] for k, v in errs.items()},
            "yaw": [None if s.meta.get("yaw") is None else float(s.meta["yaw"]) for s in faces],
        }
    timing_path = folder / "compare_time.json"
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() else []
    report = {
        "key": run.key,
        "setting": run.setting,
        "group": run.group,
        "seed": run.seed,
        "loss": dict(run.loss),
        "pdb": run.pdb,
        "stages": run.stages,
        "stage1_from": run.stage1_from,
        "config_digest": config_digest(cfg),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": run_metrics(folder, {k: int(cfg[f"stage{k}"]["batch_size"]) for k in (1, 2)}),
        "sessions": timing,  # wall time, load and CPU of each training call that touched this run
        "sets": sets,
    }
    _write_json(folder / EVAL_FILE, report)
    return report


def _train(cfg: dict[str, Any], run: PlannedRun, out_root: Path, steps: int, progress: bool) -> bool:
    """Train (or continue) one run; False when it must wait for the run whose stage 1 it reuses."""
    from train.loop import train as train_run

    folder = Path(cfg["out_dir"])
    if run.stage1_from is not None:
        src = out_root / run.stage1_from / "stage1"  # the key is the folder
        if not stage_complete(src, steps):
            return False
        dst = folder / "stage1"
        if not stage_complete(dst, steps):
            dst.mkdir(parents=True, exist_ok=True)
            for name in ("best.pt", "last.pt"):
                shutil.copy2(src / name, dst / name)
    timing_path = folder / "compare_time.json"
    folder.mkdir(parents=True, exist_ok=True)
    timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() else []
    entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": os.getloadavg()[0]}
    t0 = time.time()
    try:
        train_run(cfg, progress=progress, evaluate=False)
        entry["completed"] = True
    finally:  # an interrupted call is recorded too (its steps are in the checkpoint)
        entry.update(seconds=round(time.time() - t0, 1), load_end=os.getloadavg()[0], cpu=_cpu_model())
        _write_json(timing_path, [*timing, entry])
    return True


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"unknown x {os.cpu_count()}"


def run_all(
    base: Mapping[str, Any],
    *,
    steps: int,
    stage2_steps: int,
    out_root: Path,
    docs: Path,
    only: Sequence[str] = (),
    report_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (unless ``report_only``) and evaluate the unfinished runs of the plan, then write the report.

    ``only``: run keys (``loss_l1/s0``) or settings (``loss_l1``) to train; the report covers the whole
    plan either way, unfinished runs shown as missing seeds.
    """
    from tools.studies.compare_report import write_report
    from train.dataset import load_samples

    plan = make_plan()
    cfgs = {
        r.key: run_config(base, r, steps=steps, stage2_steps=stage2_steps, out_root=out_root) for r in plan
    }
    digests = {k: config_digest(c) for k, c in cfgs.items()}
    specs = eval_sets(base)
    samples: dict[str, Any] = {}

    def faces() -> dict[str, Any]:  # loaded once, when the first evaluation needs them
        if not samples:
            for name, spec in specs.items():
                samples[name] = load_samples(spec, base["data"]["scheme"], progress=progress)
        return samples

    for run in plan:
        folder = run_dir(out_root, run)
        if is_finished(out_root, run, digests[run.key]):
            continue
        wanted = not only or run.key in only or run.setting in only
        with contextlib.ExitStack() as held:
            if not report_only and wanted:
                if not held.enter_context(_claim(folder)):
                    print(f"[compare] {run.key} is being trained by another worker: skipped", flush=True)
                    continue
                if is_finished(out_root, run, digests[run.key]):  # another worker finished it meanwhile
                    continue
                print(f"[compare] {time.strftime('%H:%M:%S')} training {run.key} -> {folder}", flush=True)
                if not _train(cfgs[run.key], run, out_root, steps, progress):
                    print(f"[compare] {run.key} waits for {run.stage1_from}", flush=True)
                    continue
            complete = all(
                stage_complete(folder / f"stage{k}", (steps, stage2_steps)[k - 1])
                for k in range(1, run.stages + 1)
            )
            if not complete:
                continue
            rep = _evaluate(folder, run, cfgs[run.key], faces())
        nme = {k: 100 * float(np.mean(v["errors"][f"stage{run.stages}"])) for k, v in rep["sets"].items()}
        print(f"[compare] {time.strftime('%H:%M:%S')} {run.key}: NME % {nme}", flush=True)
        if not report_only:  # the report grows as runs finish
            with _report_lock(out_root):
                write_report(base, plan, out_root, docs, steps=steps, stage2_steps=stage2_steps, specs=specs)
    with _report_lock(out_root):
        return write_report(base, plan, out_root, docs, steps=steps, stage2_steps=stage2_steps, specs=specs)


@contextlib.contextmanager
def _claim(folder: Path) -> Iterator[bool]:
    """Whether this process holds ``folder``'s run for as long as the block lasts.

    Several ``wingmark compare`` processes may train one comparison side by side (say one thread
    each on a two-core machine): each takes the next unfinished run that no other one holds. The
    lock is released by the kernel when its holder exits, killed or not.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


@contextlib.contextmanager
def _report_lock(out_root: Path) -> Iterator[None]:
    """One report writer at a time among the processes sharing ``out_root``."""
    with open(out_root / ".report.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wingmark compare",
        description="The paper's comparisons (losses, PDB, one vs two stages) at a converged budget, "
        "with seeds; resumable: finished runs are skipped.",
    )
    parser.add_argument(
        "--config", default=str(_DEFAULT_CONFIG), help="base config (default: compare_ibug68)"
    )
    parser.add_argument("--steps", type=int, default=0, help="CNN-6 steps per run (0: the config's)")
    parser.add_argument(
        "--stage2-steps", type=int, default=0, help="CNN-7 steps of the cascade (0: the config's)"
    )
    parser.add_argument("--out", default="runs/compare", help="where the runs are written")
    parser.add_argument("--docs", default="docs", help="where comparison.{md,json} and img/compare_*.png go")
    parser.add_argument(
        "--resume", action="store_true", help="train nothing: rewrite the report from the finished runs"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated run keys (loss_l1/s0) or settings (loss_l1) to train"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the base config")
    args = parser.parse_args(argv)

    from train.config import load_config

    base = load_config(args.config, args.overrides)
    steps = args.steps or int(base["stage1"]["max_steps"])
    stage2_steps = args.stage2_steps or int(base["stage2"]["max_steps"])
    if steps <= 0 or stage2_steps <= 0:
        parser.error("--steps and --stage2-steps must be positive (or set in the config)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # `kill PID` unwinds like Ctrl-C: the interrupted run's session (wall time, load) is still recorded
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(args, base, steps, stage2_steps, out)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, base: dict[str, Any], steps: int, stage2_steps: int, out: Path) -> int:
    report = run_all(
        base,
        steps=steps,
        stage2_steps=stage2_steps,
        out_root=out,
        docs=Path(args.docs),
        only=[k for k in args.only.split(",") if k],
        report_only=args.resume,
        progress=not args.no_progress,
    )
    print(report["summary"])
    return 0
