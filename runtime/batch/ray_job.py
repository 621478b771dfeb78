"""``wingmark batch --ray``: the same job on Ray Data (docs/batch.md has a cluster run).

    read_binary_files(inputs)                      path + bytes, one row per image or video
      -> map_batches(LandmarkerActor, ...)         a stateful actor per worker: loads the landmarker
                                                   once, runs BatchJob.image_rows / video_rows
      -> write_parquet(out)                        the local mode's schema (runtime.batch.schema)

Actors: ``actors`` of them (default: one per GPU where the cluster has GPUs, else one per
``cpus_per_actor`` CPUs), each with ``num_gpus=gpus_per_actor`` (default 1 where there are GPUs,
e.g. with ``--backend tensorrt --device cuda``). Inputs are local paths (expanded on the driver as
in local mode, made absolute: the ``source`` column holds absolute paths) or URIs that Ray's readers take (``s3://``,
``gs://``, ...). ``out`` is a Parquet folder or URI; a rerun adds part files for the inputs not
yet in it (resume works for local inputs with a local ``out``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runtime.batch.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, expand_inputs, is_video
from runtime.batch.job import BatchJob, BatchOptions
from runtime.batch.schema import done_sources, rows_to_table

__all__ = ["LandmarkerActor", "RayOptions", "build_dataset", "run_ray"]


@dataclass(frozen=True)
class RayOptions:
    address: str | None = "auto"  # "auto": RAY_ADDRESS or a new local instance; "local"; "ray://host:10001"
    actors: int = 0  # 0: one per GPU, else one per cpus_per_actor CPUs
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0
    cpus_per_actor: float = 1.0
    rows_per_call: int = 16  # inputs per actor call (images in one call share network batches)


class LandmarkerActor:
    """A Ray Data callable class: one landmarker per actor, loaded once in ``__init__``."""

    def __init__(self, landmarker: dict[str, Any], options: BatchOptions) -> None:
        from runtime.landmarker import Landmarker

        spec = dict(landmarker)
        threads = int(spec.pop("threads", 1))
        workers = max(1, options.workers)
        if spec.get("detector", "dlib_hog") == "dlib_hog":
            spec.setdefault("detector_options", {"instances": workers})
        self.job = BatchJob(Landmarker.from_store(spec.pop("model", None), **spec, threads=threads), options)

    def __call__(self, batch: dict[str, Any]) -> Any:
        """A batch of ``path`` and ``bytes`` -> a pyarrow Table of output rows (runtime.batch.schema)."""
        paths = [str(p) for p in batch["path"]]
        blobs = [bytes(b) for b in batch["bytes"]]
        rows: list[dict[str, Any]] = []
        images = [(p, _constant(b)) for p, b in zip(paths, blobs, strict=True) if not is_video(p)]
        for _, image_rows, _ in self.job.iter_images(images):  # the local mode's threaded pipeline
            rows += image_rows
        for p, b in zip(paths, blobs, strict=True):
            if is_video(p):
                rows += self.job.video_rows(p, b)[0]
        return rows_to_table(rows)


def _constant(data: bytes) -> Any:
    return lambda: data


def _connect(address: str | None) -> Any:
    import ray

    if not ray.is_initialized():
        if address in {None, "local"} or (address == "auto" and not os.environ.get("RAY_ADDRESS")):
            ray.init(include_dashboard=False, configure_logging=False)
        else:
            ray.init(address=address, configure_logging=False)
    return ray


def build_dataset(
    paths: Sequence[str], landmarker: dict[str, Any], options: BatchOptions, ray_options: RayOptions
) -> Any:
    """The Ray Data pipeline (lazy) over ``paths`` (files, folders, URIs)."""
    import ray

    resources = ray.cluster_resources()
    gpus = ray_options.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    actors = ray_options.actors
    if actors <= 0:
        actors = (
            int(resources.get("GPU", 0) / gpus)
            if gpus > 0
            else int(resources.get("CPU", 1) / ray_options.cpus_per_actor)
        )
        actors = max(1, actors)
    ds = ray.data.read_binary_files(
        list(paths), include_paths=True,
        file_extensions=sorted(s.lstrip(".") for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES),
    )  # fmt: skip
    return ds.map_batches(
        LandmarkerActor,
        fn_constructor_kwargs={"landmarker": landmarker, "options": options},
        batch_size=max(1, ray_options.rows_per_call),
        batch_format="numpy",
        concurrency=actors,
        num_gpus=gpus,
        num_cpus=ray_options.cpus_per_actor,
    )


def run_ray(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    landmarker: dict[str, Any],
    options: BatchOptions | None = None,
    ray_options: RayOptions | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run the batch job on Ray Data; returns a small report (inputs, skipped, rows, out)."""
    ray_options = ray_options or RayOptions()
    options = options or BatchOptions()
    if options.workers <= 0:  # decode + detect threads per actor: its CPUs (not the driver's)
        options = replace(options, workers=max(1, int(ray_options.cpus_per_actor)))
    if options.draw is not None:
        raise ValueError("--draw is not supported with --ray (drawings would land on the workers)")
    remote = [str(i) for i in inputs if "://" in str(i)]
    local = [os.path.abspath(p) for p in expand_inputs([i for i in inputs if "://" not in str(i)])]
    out_text = str(out)
    skipped = 0
    if resume and "://" not in out_text and Path(out_text).exists():
        done = done_sources(Path(out_text))
        skipped = sum(p in done for p in local)
        local = [p for p in local if p not in done]
    paths = local + remote
    report: dict[str, Any] = {"out": out_text, "inputs": len(paths), "skipped": skipped}
    if not paths:
        return report
    _connect(ray_options.address)
    ds = build_dataset(paths, landmarker, options, ray_options)
    ds.write_parquet(out_text)
    return report
