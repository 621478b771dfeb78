"""The Ray Data job on a real local Ray instance (2 CPUs) against the local mode."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime import Landmarker
from runtime.batch import BatchJob, BatchOptions, expand_inputs, read_rows
from runtime.batch.ray_job import RayOptions, run_ray
from tests.service.photos import FRONTAL

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


def _key(r: dict) -> tuple[str, int, int | None]:
    return (Path(r["source"]).name, int(r["frame"]), r["face"])


@pytest.mark.slow  # a Ray instance starts in about 10-20 s here
def test_ray_gives_the_local_landmarks(
    local_ray: None, landmarker: Landmarker, photos: Path, tiny_video: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in FRONTAL[:3]:
        shutil.copy(photos / name, inputs / name)
    (inputs / "bad.jpg").write_bytes(b"nope")
    shutil.copy(tiny_video, inputs / "pan.mp4")
    local_out = tmp_path / "local.parquet"
    BatchJob(landmarker, BatchOptions(workers=1)).run(expand_inputs([inputs]), local_out, progress=False)
    ray_out = tmp_path / "ray.parquet"
    spec = {"model": "cnn67-ibug68"}
    report = run_ray(
        [inputs], ray_out, landmarker=spec, ray_options=RayOptions(address=None, actors=1, rows_per_call=2)
    )
    assert report["inputs"] == 5 and ray_out.is_dir()
    local = {_key(r): r for r in read_rows(local_out)}
    remote = {_key(r): r for r in read_rows(ray_out)}
    assert set(local) == set(remote) and len(remote) == 3 + 1 + 16
    diffs = []
    for k, r in local.items():
        if r["landmarks"] is None:
            assert remote[k]["landmarks"] is None and (remote[k]["error"] is None) == (r["error"] is None)
            continue
        diffs.append(np.abs(np.asarray(r["landmarks"]) - np.asarray(remote[k]["landmarks"])).max())
        assert remote[k]["box_source"] == r["box_source"] and remote[k]["track"] == r["track"]
    assert len(diffs) >= 3 + 12 and max(diffs) <= 1e-3
    assert all(Path(r["source"]).is_absolute() for r in remote.values())

    # resume: a rerun finds every input done and starts nothing
    again = run_ray([inputs], ray_out, landmarker=spec, ray_options=RayOptions(address=None, actors=1))
    assert again == {"out": str(ray_out), "inputs": 0, "skipped": 5}
