"""The torchrun code path (DDP + DistributedSampler) on CPU: two gloo processes on one machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tools.net import free_port
from train.config import resolve


def _worker(rank: int, world: int, port: int, cfg: dict[str, Any]) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1"}
    )
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    from train.loop import train

    train(cfg, progress=False)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path: Path) -> None:
    cfg = resolve(
        {
            "name": "ddp",
            "out_dir": str(tmp_path),
            "device": "cpu",
            "num_threads": 1,
            "data": {
                "train": {"kind": "synthetic", "num": 8, "seed": 21, "image_size": 96, "workers": 1},
                "val": {"kind": "synthetic", "num": 4, "seed": 22, "image_size": 96, "workers": 1},
                "pdb": {"enabled": False},
            },
            "stage1": {"epochs": 2, "batch_size": 2, "schedule": {"warmup_steps": 0}},
            "stage2": {"enabled": False},
        }
    )
    mp.spawn(_worker, args=(2, free_port(), cfg), nprocs=2, join=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val_steps = [r["step"] for r in rows if r["kind"] == "val"]
    # sharded: 8 faces / 2 processes / batch 2 = 2 steps per epoch, 2 epochs = 4 steps (unsharded: 8);
    # validation every step (total/10 < 1 epoch), logged by rank 0 only: no duplicates
    assert val_steps == [1, 2, 3, 4]
    ck = torch.load(tmp_path / "stage1" / "best.pt", weights_only=False)
    assert not any(k.startswith("module.") for k in ck["model"])
    assert 1 <= ck["step"] <= 4
    assert json.loads((tmp_path / "eval.json").read_text())["final"]["n"] == 4
