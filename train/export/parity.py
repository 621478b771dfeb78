"""Runtime-agnostic parity checks and ONNX Runtime helpers (numpy only; no torch import).

Used by the ONNX export (PyTorch vs ONNX Runtime), the TensorRT builder (TensorRT vs ONNX Runtime)
the quantiser, the pose gate and the flip-averaged stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ParityError",
    "ParityReport",
    "compare_outputs",
    "onnx_runtime_session",
    "run_onnx",
    "stage_runner",
]


class ParityError(AssertionError):
    """Two runtimes disagree by more than the tolerance."""


def onnx_runtime_session(path: Path, threads: int = 1) -> object:
    """A CPU ``onnxruntime.InferenceSession`` for ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: object, batch: np.ndarray) -> np.ndarray:
    """Run an ONNX Runtime session on ``[N, 3, S, S]`` float32; returns ``[N, 2K]`` float32."""
    name = session.get_inputs()[0].name  # type: ignore[attr-defined]
    (out,) = session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})  # type: ignore[attr-defined]
    return np.asarray(out, dtype=np.float32)


def stage_runner(
    paths: Sequence[Path], threads: int = 2, chunk: int = 256
) -> Callable[[int, np.ndarray], np.ndarray]:
    """``run(stage_index, x [N, 3, S, S]) -> [N, 2K]`` over one ONNX Runtime session per stage file, in
    chunks of ``chunk`` rows (a fit or an evaluation may pass thousands of crops in one call)."""
    sessions = [onnx_runtime_session(p, threads=threads) for p in paths]

    def run(stage: int, x: np.ndarray) -> np.ndarray:
        if len(x) <= chunk:  # one call; an empty batch gets the graph's own [0, 2K]
            return run_onnx(sessions[stage], x)
        return np.concatenate([run_onnx(sessions[stage], x[i : i + chunk]) for i in range(0, len(x), chunk)])

    return run


@dataclass(frozen=True)
class ParityReport:
    """Agreement of two runtimes on one batch (errors in crop units, as the network outputs)."""

    reference: str
    candidate: str
    batch_size: int
    max_abs_error: float
    mean_abs_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def compare_outputs(
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: float,
    names: tuple[str, str] = ("reference", "candidate"),
) -> ParityReport:
    """Compare two ``[N, D]`` outputs; raise :class:`ParityError` if the max abs error exceeds tolerance."""
    if reference.shape != candidate.shape:
        raise ParityError(f"shape mismatch: {names[0]} {reference.shape} vs {names[1]} {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    report = ParityReport(
        reference=names[0],
        candidate=names[1],
        batch_size=int(reference.shape[0]),
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        mean_abs_error=float(diff.mean()) if diff.size else 0.0,
        tolerance=float(tolerance),
    )
    if not np.isfinite(diff).all():
        raise ParityError(f"{names[1]} output has non-finite values")
    if not report.passed:
        raise ParityError(
            f"{names[1]} vs {names[0]}: max abs error {report.max_abs_error:.3g} > tolerance {tolerance:.3g}"
        )
    return report
