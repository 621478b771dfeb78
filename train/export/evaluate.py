"""Runtime-agnostic cascade evaluation of exported stages (numpy only; no torch import).

A published model version is evaluated through the runtime's facade (:func:`evaluate_landmarker`
with a ``runtime.Landmarker``, the object the service and ``wingmark predict`` run); anything else
that runs a stage, ``run_stage(stage_index, batch [N, 3, S, S]) -> [N, 2K]`` (an ONNX Runtime
session of files not yet published, a TensorRT engine, a quantised graph), through
``runtime.cascade.Cascade`` (:func:`evaluate_cascade`), the one stage loop the facade also runs:
stage 1 crops the face box (by default the tight box of the ground-truth points, i.e. the "client"
box) with its crop rule, every later stage re-crops the original image from the previous stage's
prediction, and each stage's crop-unit output is mapped back to image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from model_store.cascade import CascadeGeometry, StageGeometry
from model_store.schemes import Scheme
from runtime import Landmarker
from runtime.cascade import Cascade, RunStage
from train.data.types import Sample, client_boxes
from train.metrics import DEFAULT_THRESHOLDS, nme_per_sample, summarise

__all__ = [
    "TEACHER_LABELS",
    "RunStage",
    "StageGeometry",
    "cascade_predict",
    "evaluate_cascade",
    "evaluate_landmarker",
    "load_synthetic",
    "set_record",
    "stage_inputs",
]

# what every figure on the real photographs is measured against (their labels come from the teachers)
TEACHER_LABELS = "teacher labels (pseudo-labels), not human ground truth"


def set_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The start of one evaluation set's record: its dataset spec, and for real photographs the labels
    its figures are measured against."""
    entry: dict[str, Any] = {"dataset": dict(spec)}
    if spec.get("kind") == "real":
        entry["labels"] = TEACHER_LABELS
    return entry


def load_synthetic(spec: Mapping[str, Any], scheme: str) -> list[Sample]:
    """Render a synthetic dataset spec (``{kind: synthetic, num, seed, image_size, pose}``) without torch."""
    if spec.get("kind") != "synthetic":
        raise ValueError(f"only synthetic dataset specs are rendered here, got {spec.get('kind')!r}")
    from train.data.synthetic import SyntheticFaces

    faces = SyntheticFaces.from_spec(spec, scheme)
    n = min(len(faces), int(spec["limit"])) if "limit" in spec else len(faces)
    return [faces[i] for i in range(n)]  # sample i does not depend on the others: render only n


def stage_inputs(
    images: Sequence[np.ndarray],
    stage_index: int,
    geometry: StageGeometry,
    scheme: Scheme,
    *,
    boxes: np.ndarray | None = None,
    previous: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Network input ``[N, 3, S, S]`` float32 and image->crop matrices ``[N, 2, 3]`` for one stage.

    Stage 0 crops ``boxes [N, 4]``; later stages re-align on ``previous [N, K, 2]`` image points
    (``model_store.cascade``, the service's geometry).
    """
    stages = [geometry] * (stage_index + 1)  # only stage ``stage_index``'s geometry is read
    cascade = CascadeGeometry(stages, scheme)
    mats = cascade.matrices(stage_index, boxes=boxes, previous=previous)
    return cascade.inputs(stage_index, images, mats), mats


def cascade_predict(
    run_stage: RunStage,
    stages: Sequence[StageGeometry],
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    scheme: Scheme | str,
    *,
    batch_size: int = 64,
    timings: dict[str, float] | None = None,
) -> list[np.ndarray]:
    """Image-space landmarks ``[N, K, 2]`` after each stage (one array per stage): ``runtime.cascade``.

    ``images``: N ``[H, W, 3]`` uint8 RGB; ``boxes [N, 4]``: stage-1 face boxes. ``timings`` (if given)
    receives the seconds spent inside ``run_stage`` per stage (``"stage1"``, ...).
    """
    cascade = Cascade(CascadeGeometry(stages, scheme), run_stage)
    return cascade.run(images, boxes, batch_size=batch_size, timings=timings)


def evaluate_cascade(
    run_stage: RunStage,
    stages: Sequence[StageGeometry],
    samples: Sequence[Sample],
    scheme: Scheme | str,
    *,
    boxes: np.ndarray | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    batch_size: int = 64,
) -> dict[str, Any]:
    """NME summary (``train.metrics.summarise``) after each stage, plus ``final`` and timing.

    ``boxes`` default to each sample's ``meta["client_box"]``, else the tight box of its ground-truth
    points (the "client" box). The NME
    normaliser is the scheme's (inter-ocular for ibug68, sqrt of the dataset box area for aflw19).
    """
    cascade = Cascade(CascadeGeometry(stages, scheme), run_stage)
    return _evaluate(cascade.run, cascade.scheme, samples, boxes, thresholds, batch_size)


def evaluate_landmarker(
    landmarker: Landmarker,
    samples: Sequence[Sample],
    *,
    boxes: np.ndarray | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    batch_size: int = 64,
) -> dict[str, Any]:
    """:func:`evaluate_cascade` of a loaded model version through the runtime's facade
    (``landmarker.landmarks``: its backend, its cascade; client boxes by default, no detector)."""
    scheme = landmarker.cascade.scheme
    return _evaluate(landmarker.landmarks, scheme, samples, boxes, thresholds, batch_size)


def _evaluate(
    predict: Callable[..., list[np.ndarray]],
    scheme: Scheme,
    samples: Sequence[Sample],
    boxes: np.ndarray | None,
    thresholds: Sequence[float],
    batch_size: int,
) -> dict[str, Any]:
    gt = np.stack([s.points for s in samples]).astype(np.float64)  # (N, K, 2)
    dataset_boxes = np.stack([np.asarray(s.box, dtype=np.float64) for s in samples])
    normaliser = np.asarray(scheme.normaliser_distance(gt, dataset_boxes), dtype=np.float64)
    start_boxes = client_boxes(samples) if boxes is None else np.asarray(boxes, dtype=np.float64)
    timings: dict[str, float] = {}
    preds = predict([s.image for s in samples], start_boxes, batch_size=batch_size, timings=timings)
    report: dict[str, Any] = {"n": len(samples)}
    for k, pred in enumerate(preds, start=1):
        report[f"stage{k}"] = summarise(nme_per_sample(pred, gt, normaliser), thresholds)
    report["final"] = report[f"stage{len(preds)}"]
    report["inference_seconds"] = {k: round(v, 4) for k, v in timings.items()}
    return report
