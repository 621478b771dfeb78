"""The batch output: one row per face per frame, its schema, and the Parquet / JSON Lines writers.

Columns (:data:`COLUMNS`, Arrow types in :func:`arrow_schema`):

==============  ===========================  ============================================================
column          type                         meaning
==============  ===========================  ============================================================
source          string                       the input (its path as expanded, or the URI Ray read)
kind            string                       ``image`` or ``video``
frame           int64                        0 for an image; the frame index in a video (decoding order)
time            float64 (null)               seconds from the video's first frame; null for images
width, height   int32 (null)                 the (upright) image or frame size in pixels
face            int32 (null)                 the face's index in its frame (detector order, or the
                                             track's); null on a row that records "no face" or an error
track           int32 (null)                 a video's track id (stable while a face is tracked)
box             list<float64>[4] (null)      x1, y1, x2, y2 original pixels: the detector's box, or
                                             for a tracked face the box around the previous landmarks
score           float64 (null)               the detector's score; null for tracked faces
box_source      string (null)                the detector's name (``dlib_hog``), or ``track``
landmarks       list<list<float64>[2]>       [K, 2] x, y original pixels (smoothed where smoothing is on)
landmarks_raw   list<list<float64>[2]>       [K, 2] before smoothing; null where nothing was smoothed
pose            struct (null)                yaw, pitch, roll (degrees), reprojection_error (``--pose``)
model           string                       model name
model_version   string                       model version
error           string (null)                why the input failed (a row with no face); else null
==============  ===========================  ============================================================

Every input leaves at least one row (a face, a "no face" row with ``face`` null, or an error row),
so a resumed run can tell which inputs are done: :func:`done_sources`.

Parquet cannot be appended to: :class:`ParquetSink` writes ``OUT.partial`` (the earlier rows of a
resumed run first) and renames it to ``OUT`` when the job ends, also on Ctrl-C or SIGTERM. JSON
Lines are appended and flushed per input; a torn last line (a killed run) is dropped on resume.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "JsonlSink",
    "ParquetSink",
    "Sink",
    "arrow_schema",
    "done_sources",
    "open_sink",
    "read_rows",
]

COLUMNS = (
    "source", "kind", "frame", "time", "width", "height", "face", "track", "box", "score", "box_source",
    "landmarks", "landmarks_raw", "pose", "model", "model_version", "error",
)  # fmt: skip

POSE_FIELDS = ("yaw", "pitch", "roll", "reprojection_error")


def arrow_schema() -> Any:
    """The output's pyarrow schema (pyarrow is imported here, not at module import)."""
    import pyarrow as pa

    points = pa.list_(pa.list_(pa.float64(), 2))
    return pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("frame", pa.int64(), nullable=False),
            pa.field("time", pa.float64()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("face", pa.int32()),
            pa.field("track", pa.int32()),
            pa.field("box", pa.list_(pa.float64(), 4)),
            pa.field("score", pa.float64()),
            pa.field("box_source", pa.string()),
            pa.field("landmarks", points),
            pa.field("landmarks_raw", points),
            pa.field("pose", pa.struct([pa.field(f, pa.float64()) for f in POSE_FIELDS])),
            pa.field("model", pa.string(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("error", pa.string()),
        ]
    )


def rows_to_table(rows: Sequence[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = arrow_schema()
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Sink:
    """Where a job's rows go; ``write`` takes every row of one finished input."""

    path: Path

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class JsonlSink(Sink):
    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            _drop_torn_tail(path)
        self._file = path.open("a" if resume else "w", encoding="utf-8")

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            self._file.write(json.dumps({c: _json_safe(r.get(c)) for c in COLUMNS}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a killed run left unfinished."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


class ParquetSink(Sink):
    """Rows to ``path`` through ``path.partial``; a resumed run's earlier rows are copied first."""

    def __init__(self, path: Path, *, resume: bool, row_group_rows: int = 4096) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(str(self.partial), arrow_schema(), compression="zstd")
        self._pending: list[dict[str, Any]] = []
        self._row_group_rows = row_group_rows
        if resume and path.exists():
            self._writer.write_table(pq.read_table(str(path), schema=arrow_schema()))

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self._pending += rows
        if len(self._pending) >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(rows_to_table(self._pending))
            self._pending = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self.partial, self.path)


def open_sink(path: Path, *, resume: bool) -> Sink:
    """A Parquet sink for ``.parquet``, JSON Lines for ``.jsonl`` (ValueError otherwise)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetSink(path, resume=resume)
    if suffix == ".jsonl":
        return JsonlSink(path, resume=resume)
    raise ValueError(f"--out must end in .parquet or .jsonl, got {path.name!r}")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an output (a ``.parquet`` file or folder of parts, or ``.jsonl``) as dicts."""
    if path.suffix.lower() == ".jsonl" and path.is_file():
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line
        return rows
    import pyarrow.parquet as pq

    rows_out: list[dict[str, Any]] = pq.read_table(str(path)).to_pylist()
    return rows_out


def done_sources(path: Path) -> set[str]:
    """The sources an earlier run finished (every input leaves a row), for resuming."""
    if not path.exists():
        return set()
    if path.suffix.lower() == ".jsonl" and path.is_file():
        return {str(r["source"]) for r in read_rows(path) if "source" in r}
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=["source"])
    return {str(s) for s in table.column("source").unique().to_pylist()}
