"""Batch landmarking of images and videos through the runtime facade, locally or on Ray Data.

    from runtime import Landmarker
    from runtime.batch import BatchJob, expand_inputs
    job = BatchJob(Landmarker.from_store("faceapi-ibug68"))
    job.run(expand_inputs(["photos/", "clips/*.mp4"]), Path("results.parquet"))

Modules: :mod:`~runtime.batch.inputs` (input specs, video frames), :mod:`~runtime.batch.schema` (the
output's columns, Parquet / JSON Lines writers, resume), :mod:`~runtime.batch.job` (the pipeline),
:mod:`~runtime.batch.tracking` (video tracking, One Euro smoothing), :mod:`~runtime.batch.ray_job`
(Ray Data), :mod:`~runtime.batch.cli` (``wingmark batch``). PyAV, pyarrow and Ray are imported only
where they are used (the ``batch`` and ``ray`` extras); importing this package loads no model.
"""

from __future__ import annotations

from runtime.batch.inputs import InputError, expand_inputs, is_video, read_video
from runtime.batch.job import BatchJob, BatchOptions, BatchSummary
from runtime.batch.schema import COLUMNS, arrow_schema, done_sources, read_rows
from runtime.batch.tracking import FaceTracker, OneEuroFilter, OneEuroParams, TrackedFace, TrackerConfig

__all__ = [
    "COLUMNS",
    "BatchJob",
    "BatchOptions",
    "BatchSummary",
    "FaceTracker",
    "InputError",
    "OneEuroFilter",
    "OneEuroParams",
    "TrackedFace",
    "TrackerConfig",
    "arrow_schema",
    "done_sources",
    "expand_inputs",
    "is_video",
    "read_rows",
    "read_video",
]
