"""The batch job: many images and videos through one :class:`runtime.Landmarker`, no HTTP.

Images run as a pipeline::

    worker threads (``workers``, default: every core):  read -> decode -> detect -> calibrate -> stage-1 crops
    the calling thread:  gathers the faces of several images into one batch (``batch_size`` faces)
                         -> the cascade (stage 1, re-crop, stage 2) -> rows -> the sink

so decoding and detection of the next images overlap the network calls of this batch (Pillow,
dlib and ONNX Runtime release the GIL while they work). Videos run frame by frame through a
:class:`runtime.batch.tracking.FaceTracker`, their frames decoded ahead in a thread.

A failing input (unreadable, undecodable, too large, a broken video) becomes one row with its
``error`` and never stops the run. The same per-input functions (:meth:`BatchJob.image_rows`,
:meth:`BatchJob.video_rows`) serve the Ray actors (:mod:`runtime.batch.ray_job`).
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from runtime.batch.inputs import is_video, read_video, video_frame_count
from runtime.batch.progress import Progress
from runtime.batch.schema import Sink, done_sources, open_sink
from runtime.batch.tracking import FaceTracker, TrackedFace, TrackerConfig
from runtime.cascade import FaceJob
from runtime.decode import DecodedImage, decode_image
from runtime.landmarker import FoundFaces, Landmarker
from runtime.poses import face_poses

__all__ = ["BatchJob", "BatchOptions", "BatchSummary"]


@dataclass(frozen=True)
class BatchOptions:
    max_faces: int | None = None  # per image or frame (best detector scores first)
    pose: bool = False  # add head pose (yaw, pitch, roll) to every face
    batch_size: int = 32  # faces per network call (gathered across images)
    workers: int = 0  # decode + detect threads for images (0: os.cpu_count())
    max_pixels: int = 40_000_000  # larger images are refused (recorded as errors)
    max_side: int | None = 2048  # JPEGs much larger than this are decoded reduced
    track: bool = True  # videos: track between detections (False: detect on every frame)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)  # smoothing included
    draw: Path | None = None  # write annotated images / videos under this folder


@dataclass
class BatchSummary:
    inputs: int = 0  # inputs processed in this run
    skipped: int = 0  # inputs an earlier run finished (resumed)
    failed: int = 0
    frames: int = 0  # images + video frames
    faces: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "frames_per_second": self.frames / self.seconds if self.seconds else 0.0}


@dataclass
class _Prepared:
    """One image after the worker thread: decoded, faces found, stage-1 crops made."""

    source: str
    image: DecodedImage | None = None
    found: FoundFaces | None = None
    jobs: list[FaceJob] = field(default_factory=list)
    error: str | None = None
    data: bytes | None = None  # kept for --draw


Loader = Callable[[], bytes]


class BatchJob:
    """A landmarker and the options of a batch run (see the module docstring)."""

    def __init__(self, landmarker: Landmarker, options: BatchOptions | None = None) -> None:
        if landmarker.detector is None:
            raise ValueError("a batch job needs a face detector")
        self.landmarker = landmarker
        self.options = options or BatchOptions()

    # -- rows ---------------------------------------------------------------------------------------
    def _base(self, source: str, kind: str, frame: int = 0) -> dict[str, Any]:
        lm = self.landmarker
        return {"source": source, "kind": kind, "frame": frame, "model": lm.name, "model_version": lm.version}

    def error_row(self, source: str, error: str) -> dict[str, Any]:
        return {**self._base(source, "video" if is_video(source) else "image"), "error": error}

    def _face_rows(
        self,
        base: dict[str, Any],
        boxes: Sequence[np.ndarray],
        scores: Sequence[float | None],
        sources: Sequence[str],
        landmarks: Sequence[np.ndarray],
        raw: Sequence[np.ndarray | None],
        tracks: Sequence[int | None],
    ) -> list[dict[str, Any]]:
        if not len(landmarks):
            return [dict(base)]  # the frame was looked at: no face
        poses: list[dict[str, float] | None] = [None] * len(landmarks)
        if self.options.pose:
            poses = face_poses(list(landmarks), self.landmarker.scheme, base["width"], base["height"])
        rows = []
        for i, (b, s, src, p, r, tr, pose) in enumerate(
            zip(boxes, scores, sources, landmarks, raw, tracks, poses, strict=True)
        ):
            rows.append(
                {
                    **base,
                    "face": i,
                    "track": tr,
                    "box": [float(v) for v in b],
                    "score": s,
                    "box_source": src,
                    "landmarks": np.asarray(p, dtype=np.float64).tolist(),
                    "landmarks_raw": None if r is None else np.asarray(r, dtype=np.float64).tolist(),
                    "pose": pose,
                }
            )
        return rows

    # -- images ---------------------------------------------------------------------------------------
    def _prepare(self, source: str, load: Loader) -> _Prepared:
        """Worker thread: bytes -> decoded image, faces, stage-1 crops (errors recorded, not raised)."""
        lm, o = self.landmarker, self.options
        try:
            data = load()
            image = decode_image(data, max_pixels=o.max_pixels, max_side=o.max_side)
            found = lm.find_faces(image, max_faces=o.max_faces)
            jobs = (
                lm.cascade.prepare(image.pixels, lm.tight_boxes(image, found), found.angles)
                if len(found.boxes)
                else []
            )
            return _Prepared(source, image, found, jobs, data=data if o.draw is not None else None)
        except Exception as exc:  # unreadable, undecodable, too large, a detector failure: recorded
            return _Prepared(source, error=f"{type(exc).__name__}: {exc}")

    def _finish_images(self, batch: list[_Prepared]) -> list[tuple[str, list[dict[str, Any]], int]]:
        """The calling thread: one cascade run over the faces of ``batch`` -> (source, rows, faces)."""
        lm = self.landmarker
        jobs = [j for p in batch for j in p.jobs]
        points: list[np.ndarray] = []
        if jobs:
            try:
                points = self._run_jobs(jobs)
                # the second pass (Landmarker.refine) for the images whose faces get it
                again, at = [], 0
                for p in batch:
                    n = len(p.jobs)
                    if n and p.image is not None and p.found is not None and lm.refines(p.found):
                        boxes = lm.refine_boxes(np.stack(points[at : at + n]))
                        again.append((at, lm.cascade.prepare(p.image.pixels, boxes)))
                    at += n
                if again:
                    redone = self._run_jobs([j for _, js in again for j in js])
                    k = 0
                    for at, js in again:
                        points[at : at + len(js)] = redone[k : k + len(js)]
                        k += len(js)
            except (RuntimeError, ValueError) as exc:  # a failed network call fails this batch's inputs
                return [
                    (p.source, [self.error_row(p.source, f"{type(exc).__name__}: {exc}")], 0) for p in batch
                ]
        out = []
        at = 0
        for p in batch:
            if p.error is not None or p.image is None or p.found is None:
                out.append((p.source, [self.error_row(p.source, p.error or "failed")], 0))
                continue
            n = len(p.jobs)
            img = p.image
            faces = lm.faces(img, p.found, np.stack(points[at : at + n]) if n else np.zeros((0, 1, 2)))
            at += n
            base = {**self._base(p.source, "image"), "width": img.width, "height": img.height}
            rows = self._face_rows(
                base, [f.box for f in faces], [f.score for f in faces], [p.found.source] * n,
                [f.landmarks for f in faces], [None] * n, [None] * n,
            )  # fmt: skip
            if self.options.draw is not None and p.data is not None:
                from runtime.batch.draw import draw_image

                draw_image(p.data, [f.landmarks for f in faces], [f.box for f in faces],
                           self.options.draw, p.source)  # fmt: skip
            out.append((p.source, rows, n))
        return out

    def _run_jobs(self, jobs: Sequence[Any]) -> list[np.ndarray]:
        """The cascade over prepared faces, ``batch_size`` at a time -> final points [K, 2] each."""
        step = max(1, self.options.batch_size)
        out: list[np.ndarray] = []
        for k in range(0, len(jobs), step):
            out += self.landmarker.cascade.run_batch(jobs[k : k + step])
        return out

    def image_rows(self, items: Sequence[tuple[str, Loader]]) -> list[tuple[str, list[dict[str, Any]], int]]:
        """Images (source, loader of their bytes) -> (source, rows, faces) each, in the calling thread."""
        return self._finish_images([self._prepare(s, load) for s, load in items])

    def iter_images(
        self, items: Iterable[tuple[str, Loader]]
    ) -> Iterator[tuple[str, list[dict[str, Any]], int]]:
        """The threaded pipeline over images: (source, rows, faces) in input order."""
        workers = self.options.workers or os.cpu_count() or 1
        ahead = max(2 * workers, self.options.batch_size)
        with ThreadPoolExecutor(workers, thread_name_prefix="batch-prepare") as pool:
            pending: collections.deque[Future[_Prepared]] = collections.deque()
            it = iter(items)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < ahead:
                    try:
                        source, load = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(pool.submit(self._prepare, source, load))
                if not pending:
                    break
                batch = [pending.popleft().result()]  # wait for the oldest, then take what is ready
                faces = len(batch[0].jobs)
                while pending and pending[0].done() and faces < self.options.batch_size:
                    batch.append(pending.popleft().result())
                    faces += len(batch[-1].jobs)
                yield from self._finish_images(batch)

    # -- videos ---------------------------------------------------------------------------------------
    def video_rows(
        self, source: str, media: str | Path | bytes, on_frame: Callable[[int], None] | None = None
    ) -> tuple[list[dict[str, Any]], int, int]:
        """A video -> (rows, frames, faces); a decoding error after some frames keeps those frames'
        rows and adds an error row."""
        o = self.options
        tracker = FaceTracker(self.landmarker, config=o.tracker, track=o.track, max_faces=o.max_faces)
        smoothing = o.tracker.smoothing is not None
        rows: list[dict[str, Any]] = []
        frames = faces = 0
        writer = None
        try:
            if o.draw is not None:
                from runtime.batch.draw import VideoDrawer

                writer = VideoDrawer(o.draw, source, media)
            for fr in read_video(media):
                found: list[TrackedFace] = tracker.step(fr.pixels, fr.time)
                h, w = fr.pixels.shape[:2]
                base = {**self._base(source, "video", fr.index), "time": fr.time, "width": w, "height": h}
                rows += self._face_rows(
                    base, [f.box for f in found], [f.score for f in found], [f.box_source for f in found],
                    [f.landmarks for f in found], [f.landmarks_raw if smoothing else None for f in found],
                    [f.track for f in found],
                )  # fmt: skip
                if writer is not None:
                    writer.add(fr.pixels, [f.landmarks for f in found], [f.box for f in found])
                frames += 1
                faces += len(found)
                if on_frame is not None:
                    on_frame(len(found))
        except Exception as exc:  # PyAV errors (av.error.*) subclass OSError / ValueError; be broad
            rows.append(self.error_row(source, f"{type(exc).__name__}: {exc}"))
        finally:
            if writer is not None:
                writer.close()
        return rows, frames, faces

    # -- the whole run --------------------------------------------------------------------------------
    def run(
        self,
        inputs: Sequence[Path | str],
        out: Path,
        *,
        resume: bool = True,
        progress: bool = True,
        stream: Any = None,
        log_every: float = 10.0,
        stop: threading.Event | None = None,
    ) -> BatchSummary:
        """Landmarks of every input into ``out`` (``.parquet`` or ``.jsonl``; see runtime.batch.schema).

        With ``resume``, inputs ``out`` already holds are skipped and the new rows are added to it;
        otherwise ``out`` is rewritten. Ctrl-C or SIGTERM stops after the current input and keeps
        every finished input in ``out``; so does setting ``stop`` from another thread. ``stream``
        (default stderr) gets the progress bar; off a terminal, a line every ``log_every`` seconds.
        """
        summary = BatchSummary()
        done = done_sources(out) if resume else set()
        todo = [str(p) for p in inputs if str(p) not in done]
        summary.skipped = len(inputs) - len(todo)
        images = [s for s in todo if not is_video(s)]
        videos = [s for s in todo if is_video(s)]
        total = len(images) + sum(video_frame_count(v) or 1 for v in videos)
        bar = Progress(
            total,
            unit="frames" if videos else "images",
            enabled=progress,
            stream=stream,
            log_interval=log_every,
        )
        sink = open_sink(out, resume=resume)
        stop = stop or threading.Event()
        previous = _on_sigterm(stop)
        started = time.perf_counter()
        try:
            try:
                self._run_images(images, sink, bar, summary, stop)
                self._run_videos(videos, sink, bar, summary, stop)
            except KeyboardInterrupt:
                stop.set()
            summary.interrupted = stop.is_set()
        finally:
            sink.close()
            bar.close()
            _restore_sigterm(previous)
            summary.seconds = time.perf_counter() - started
        return summary

    def _run_images(
        self, images: list[str], sink: Sink, bar: Progress, summary: BatchSummary, stop: threading.Event
    ) -> None:
        if not images:
            return
        items = ((s, _file_loader(s)) for s in images)
        for _, rows, faces in self.iter_images(items):
            sink.write(rows)
            summary.inputs += 1
            summary.frames += 1
            summary.faces += faces
            summary.failed += rows[0].get("error") is not None
            bar.update(1, faces)
            if stop.is_set():
                return

    def _run_videos(
        self, videos: list[str], sink: Sink, bar: Progress, summary: BatchSummary, stop: threading.Event
    ) -> None:
        for source in videos:
            if stop.is_set():
                return
            expected = video_frame_count(source) or 1
            seen = [0]

            def on_frame(faces: int, seen: list[int] = seen, expected: int = expected) -> None:
                seen[0] += 1
                bar.update(1 if seen[0] <= expected else 0, faces)
                if stop.is_set():
                    raise KeyboardInterrupt  # an unfinished video is not written: it is redone on resume

            try:
                rows, frames, faces = self.video_rows(source, source, on_frame)
            except KeyboardInterrupt:
                stop.set()
                return
            if stop.is_set():
                return
            bar.update(max(0, expected - seen[0]), 0)  # the header's count was an estimate
            sink.write(rows)
            summary.inputs += 1
            summary.frames += frames
            summary.faces += faces
            summary.failed += any(r.get("error") is not None for r in rows)


def _file_loader(path: str) -> Loader:
    return lambda: Path(path).read_bytes()


def _on_sigterm(stop: threading.Event) -> Any:
    """SIGTERM (in the main thread) -> finish the current input, close the output, exit."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
