"""``wingmark compare``: the plan, skipping finished runs, ``--resume`` and the tie rule."""

from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path

import pytest
import torch

from tools.studies.compare import main, run_metrics
from tools.studies.compare_plan import LOSS_SEEDS, PlannedRun, config_digest, make_plan, run_config
from tools.studies.compare_report import write_report
from tools.studies.compare_stats import (
    compare_pair,
    curve_at,
    paper_claim,
    ranking,
    ranking_along_schedule,
    seed_stats,
)
from train.config import DEFAULTS, resolve

torch.set_num_threads(1)

REAL = Path(__file__).resolve().parents[2] / "fixtures" / "real"
TINY = [
    "data.train={kind: synthetic, num: 8, seed: 31, image_size: 128, workers: 1}",
    "data.val={kind: synthetic, num: 4, seed: 32, image_size: 128, workers: 1}",
    "data.test={kind: synthetic, num: 6, seed: 33, image_size: 128, workers: 1}",
    f"eval.sets={{real_test: {{kind: real, root: {REAL}, split: test}}}}",
    "stage2.init.data={kind: synthetic, num: 4, seed: 34, image_size: 128, workers: 1}",
    "data.pdb.num_bins=3",
    "stage1.batch_size=4",
    "stage2.batch_size=4",
]


def test_plan_has_the_issues_seeds_in_rounds() -> None:
    plan = make_plan()
    count: dict[str, int] = {}
    for r in plan:
        count[r.setting] = count.get(r.setting, 0) + 1
    assert {k: count[f"loss_{k}"] for k in LOSS_SEEDS} == {
        "l2": 2, "l1": 3, "smooth_l1": 2, "wing": 3, "adaptive_wing": 2
    }  # fmt: skip
    assert count["pdb_off"] == 2 and count["cascade"] == 2
    grid = [r for r in plan if r.group == "wing_grid"]
    assert len(grid) == 4 and all(r.seed == 0 for r in grid)
    assert ("wing", 10.0, 2.0) not in {(r.loss["name"], r.loss["w"], r.loss["eps"]) for r in grid}
    # every setting's first seed comes before any second seed; the grid comes last
    seeds = [r.seed for r in plan if r.group != "wing_grid"]
    assert seeds == sorted(seeds) and plan[-4:] == grid
    # a cascade reuses the stage 1 of the Wing run with its seed, which comes before it
    keys = [r.key for r in plan]
    for r in plan:
        if r.group == "cascade":
            assert r.stage1_from == f"loss_wing/s{r.seed}" and keys.index(r.stage1_from) < keys.index(r.key)
    pdb = [r for r in plan if r.group == "pdb"]
    assert all(not r.pdb and r.loss["name"] == "wing" for r in pdb)
    with pytest.raises(ValueError, match="pair with Wing"):
        make_plan(pdb_seeds=4)


def test_run_config_sets_only_the_run_and_the_digest_tells_runs_apart(tmp_path: Path) -> None:
    base = resolve(DEFAULTS)
    plan = {r.key: r for r in make_plan()}
    cfg = run_config(base, plan["pdb_off/s1"], steps=400, stage2_steps=300, out_root=tmp_path)
    assert cfg["seed"] == 1 and cfg["resume"] is True and cfg["data"]["pdb"]["enabled"] is False
    assert (
        cfg["stage1"]["loss"] == {"name": "wing", "w": 10.0, "eps": 2.0} and cfg["stage1"]["max_steps"] == 400
    )
    assert cfg["stage2"]["enabled"] is False and cfg["out_dir"] == str(tmp_path / "pdb_off" / "s1")
    assert cfg["stage1"]["eval_interval"] == 20  # about 20 validations: the budget check's curve
    cas = run_config(base, plan["cascade/s0"], steps=400, stage2_steps=300, out_root=tmp_path)
    assert cas["stage2"]["enabled"] is True and cas["stage2"]["max_steps"] == 300

    def digest(key: str, steps: int = 400) -> str:
        return config_digest(run_config(base, plan[key], steps=steps, stage2_steps=300, out_root=tmp_path))

    assert digest("loss_l1/s0") != digest("loss_l1/s1") != digest("loss_l2/s1")
    assert digest("loss_l1/s0") != digest("loss_l1/s0", steps=500)
    assert digest("loss_wing/s0") != digest("cascade/s0")  # two stages
    moved = run_config(base, plan["loss_l1/s0"], steps=400, stage2_steps=300, out_root=tmp_path / "x")
    assert config_digest(moved) == digest("loss_l1/s0")  # the folder is not part of the run


def test_tie_rule_ranks_only_beyond_the_seed_spread() -> None:
    a, b = seed_stats([0.050, 0.054]), seed_stats([0.060, 0.062])  # diff 0.009 > spreads 0.004, 0.002
    assert a["spread"] == pytest.approx(0.004) and a["std"] == pytest.approx(0.002 * 2**0.5)
    assert compare_pair(a, b) == "<" and compare_pair(b, a) == ">"
    wide = seed_stats([0.050, 0.070])  # spread 0.02 > diff 0.001
    assert compare_pair(wide, b) == "tie" and compare_pair(b, wide) == "tie"
    one = seed_stats([0.01])
    assert one["spread"] is None and compare_pair(one, b) == "unresolved"
    assert compare_pair(seed_stats([]), b) == "unresolved"
    stats = {"wing": a, "l1": b, "smooth_l1": wide, "l2": seed_stats([0.09, 0.091])}
    assert ranking(stats) == "wing ≈ smooth_l1 ≈ l1 < l2"  # means 0.052, 0.060, 0.061, 0.0905
    claim = paper_claim(stats, ("wing", "l1", "smooth_l1", "l2"))
    assert claim["verdict"] == "tie" and [p["relation"] for p in claim["pairs"]] == ["<", "tie", "<"]
    assert paper_claim({"wing": a, "l1": b}, ("wing", "l1"))["verdict"] == "holds"
    assert paper_claim({"wing": b, "l1": a}, ("wing", "l1"))["verdict"] == "contradicted"
    assert paper_claim({"wing": a, "l1": one}, ("wing", "l1"))["verdict"] == "unresolved"


def test_ranking_along_the_schedule_reads_each_curve_at_the_nearest_logged_step() -> None:
    a = [[100, 0.9], [200, 0.5], [300, 0.4], [400, 0.2]]
    assert curve_at(a, 0.5) == 0.5 and curve_at(a, 0.75) == 0.4 and curve_at(a, 1.0) == 0.2
    assert curve_at([[10, 0.3]], 0.5) == 0.3
    # "x" leads in the middle of the schedule and is overtaken at the end, beyond both seed spreads
    x = [[[2, 0.50], [3, 0.40], [4, 0.30]], [[2, 0.52], [3, 0.41], [4, 0.31]]]
    y = [[[2, 0.60], [3, 0.45], [4, 0.20]], [[2, 0.61], [3, 0.47], [4, 0.21]]]
    z = [[[2, 0.70], [3, 0.70], [4, 0.70]]]  # one seed: its place is unresolved
    assert ranking_along_schedule({"x": x, "y": y, "z": z}) == {
        "0.5": "x < y ? z", "0.75": "x < y ? z", "1": "y < x ? z"
    }  # fmt: skip


def test_compare_skips_finished_runs_and_resume_only_reports(tmp_path: Path) -> None:
    out, docs = tmp_path / "runs", tmp_path / "docs"
    args = ["--steps", "2", "--stage2-steps", "1", "--out", str(out), "--docs", str(docs), "--no-progress"]
    assert main([*args, "--only", "loss_wing/s0,cascade/s0", *TINY]) == 0
    wing, cas = out / "loss_wing" / "s0", out / "cascade" / "s0"
    ev = json.loads((wing / "compare_eval.json").read_text())
    assert (
        set(ev["sets"]) == {"synthetic", "real_test"}
        and len(ev["sets"]["synthetic"]["errors"]["stage1"]) == 6
    )
    assert ev["metrics"]["stage1"]["val_curve"][-1][0] == 2
    ev_cas = json.loads((cas / "compare_eval.json").read_text())
    assert set(ev_cas["sets"]["synthetic"]["errors"]) == {"stage1", "stage2"}
    # the cascade's stage 1 is the Wing run's, copied and not retrained
    assert ev_cas["sets"]["synthetic"]["errors"]["stage1"] == ev["sets"]["synthetic"]["errors"]["stage1"]
    assert not (out / "loss_l1").exists()  # not in --only
    rep = json.loads((docs / "comparison.json").read_text())
    assert rep["done"] == ["loss_wing/s0", "cascade/s0"] and len(rep["remaining"]) == 18
    md = (docs / "comparison.md").read_text()
    assert (
        "| loss_wing | wing w=10 eps=2 | on | 1 | 1 of 3 |" in md
        and "| loss_l1 | l1 | on | 1 | 0 of 3 |" in md
    )
    assert (docs / "img" / "compare_ced_losses_synthetic.png").stat().st_size > 1000
    # per run: NME on both sets, step and wall minutes, one training session with its load
    assert re.search(r"\| loss_wing/s0 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 1 \| [\d.]+-[\d.]+ \|", md)

    # the same command again: finished runs are neither retrained nor re-evaluated
    stamp = {p: p.stat().st_mtime_ns for p in [wing / "stage1" / "last.pt", wing / "compare_eval.json"]}
    assert main([*args, "--only", "loss_wing/s0,cascade/s0", *TINY]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp

    # --resume trains nothing; a run whose checkpoints are complete but whose evaluation is lost is
    # evaluated once, from its checkpoint
    (cas / "compare_eval.json").unlink()
    ckpt = (cas / "stage2" / "last.pt").stat().st_mtime_ns
    (docs / "comparison.md").unlink()
    partial = out / "loss_l1" / "s0"  # an interrupted run is reported by its last validation
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text('{"kind": "val", "stage": 1, "step": 1, "val_nme": 0.5}\n')
    assert main([*args, "--resume", *TINY]) == 0
    assert (
        "- loss_l1/s0 (unfinished): stage1 at step 1, last validation NME 50.00 % at step 1."
        in (docs / "comparison.md").read_text()
    )
    assert (cas / "compare_eval.json").is_file() and (cas / "stage2" / "last.pt").stat().st_mtime_ns == ckpt
    assert not (partial / "stage1").exists()  # nothing trained

    # another budget in the same folder is refused, not silently mixed in
    with pytest.raises(ValueError, match="another config"):
        main(["--steps", "3", *args[2:], "--resume", *TINY])
    # workers share a folder: a run another process holds is skipped, the next free one is trained
    (out / "loss_l1" / "s0").mkdir(parents=True, exist_ok=True)
    with open(out / "loss_l1" / "s0" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*args, "--only", "loss_l1/s0,loss_l2/s0", *TINY]) == 0
    assert not (partial / "stage1").exists()
    assert (out / "loss_l2" / "s0" / "compare_eval.json").is_file()


def _fake_eval(folder: Path, run: PlannedRun, nme: float) -> None:
    """A run's evaluation as ``compare.py`` writes it: six synthetic faces, each at ``nme`` except one
    turned face at twice that; no real set."""
    folder.mkdir(parents=True, exist_ok=True)
    errors = [nme] * 5 + [2 * nme]
    yaw = [0.0, 5.0, -10.0, 20.0, 25.0, 50.0]
    sets = {"synthetic": {"errors": {f"stage{k}": errors for k in range(1, run.stages + 1)}, "yaw": yaw}}
    ev = {"key": run.key, "stages": run.stages, "sets": sets, "metrics": {"stage1": {"step_seconds": 60.0}}}
    (folder / "compare_eval.json").write_text(json.dumps(ev))


def test_report_from_evaluations_states_the_claim_and_the_spread(tmp_path: Path) -> None:
    plan = make_plan()
    runs = {r.key: r for r in plan}
    nmes = {"wing": (0.050, 0.052), "l1": (0.060, 0.061), "smooth_l1": (0.070, 0.074), "l2": (0.090, 0.080)}
    for loss, values in nmes.items():
        for seed, v in enumerate(values):
            _fake_eval(tmp_path / f"loss_{loss}" / f"s{seed}", runs[f"loss_{loss}/s{seed}"], v)
    base = resolve(DEFAULTS)
    specs = {"synthetic": {"kind": "synthetic", "num": 6, "seed": 3}}
    docs = tmp_path / "docs"
    rep = write_report(base, plan, tmp_path, docs, steps=4800, stage2_steps=3000, specs=specs)
    wing = rep["settings"]["loss_wing"]["sets"]["synthetic"]
    # per seed: five faces at v, one at 2v -> NME 7v/6; the setting: mean and range over its two seeds
    assert wing["nme"]["values"] == pytest.approx([0.050 * 7 / 6, 0.052 * 7 / 6])
    assert wing["large_yaw"]["mean"] == pytest.approx(2 * 0.051)  # the one face at |yaw| >= 30
    assert wing["yaw_bins"]["|yaw| 45-60"]["faces"] == 1 and wing["yaw_bins"]["|yaw| 15-30"]["faces"] == 2
    claim = rep["verdicts"]["synthetic"]["paper_claim"]
    assert claim["verdict"] == "holds", claim
    assert rep["verdicts"]["synthetic"]["loss_ranking"] == "wing < l1 < smooth_l1 < l2"
    md = (docs / "comparison.md").read_text()
    assert "Wing < L1 < smooth L1 < L2 HOLDS" in md
    assert "| loss_wing | wing w=10 eps=2 | on | 1 | 2 of 3 | 5.95 | 5.83-6.07 (±0.16) |" in md
    assert "| loss_l2 | l2 | on | 1 | 2 |" in md  # all planned seeds finished
    assert "Status: 8 of 20 runs finished." in md and "compare_ced_losses_synthetic.png" in md
    assert "compare_ced_pdb_synthetic.png" in md  # the Wing runs alone still draw the PDB plot
    assert "compare_val_curves.png" not in md  # no validation curve in these evaluations
    # the Wing grid: each point against the (10, 2) seed range (5.83-6.07 %), then the sum of them
    for setting, v in {"wing_w5_e2": 0.040, "wing_w15_e2": 0.051, "wing_w10_e1": 0.070}.items():
        _fake_eval(tmp_path / setting / "s0", runs[f"{setting}/s0"], v)
    write_report(base, plan, tmp_path, docs, steps=4800, stage2_steps=3000, specs=specs)
    md = (docs / "comparison.md").read_text()
    assert "- wing_w5_e2 (synthetic): 4.67 %, below the (10, 2) seed range" in md
    assert "- wing_w10_e3 (synthetic): not finished." in md
    assert (
        "- In all: 1 of 3 grid results tie with (10, 2); better than its whole seed range: wing_w5_e2 on"
        " synthetic; worse: wing_w10_e1 on synthetic." in md
    )
    # one L2 seed much worse widens L2's spread until smooth L1 and L2 tie
    _fake_eval(tmp_path / "loss_l2" / "s1", runs["loss_l2/s1"], 0.140)
    rep = write_report(base, plan, tmp_path, docs, steps=4800, stage2_steps=3000, specs=specs)
    assert rep["verdicts"]["synthetic"]["paper_claim"]["verdict"] == "tie"
    assert rep["verdicts"]["synthetic"]["loss_ranking"] == "wing < l1 < smooth_l1 ≈ l2"


def test_step_seconds_count_each_logged_window_once_across_a_resume(tmp_path: Path) -> None:
    rows = [
        {"kind": "train", "stage": 1, "step": 20, "imgs_per_s": 64.0},  # 20 steps of 32: 10 s
        {"kind": "train", "stage": 1, "step": 40, "imgs_per_s": 32.0},  # 20 s
        {"kind": "val", "stage": 1, "step": 40, "val_nme": 0.2},
        {"kind": "train", "stage": 1, "step": 60, "imgs_per_s": 64.0},  # 10 s, then killed at ~70
        {"kind": "train", "stage": 1, "step": 60, "imgs_per_s": 64.0},  # resumed at 40: 10 s again
        {"kind": "train", "stage": 1, "step": 70, "imgs_per_s": 64.0},  # the last, short window: 5 s
        {"kind": "val", "stage": 1, "step": 70, "val_nme": 0.1},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = run_metrics(tmp_path, {1: 32, 2: 32})
    assert got["stage1"]["step_seconds"] == pytest.approx(55.0)
    assert got["stage1"]["val_curve"] == [[40, 0.2], [70, 0.1]]
