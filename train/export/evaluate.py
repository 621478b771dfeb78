"""Runtime-agnostic cascade evaluation of exported stages (numpy only; no torch import).

Anything that runs a stage, ``run_stage(stage_index, batch [N, 3, S, S]) -> [N, 2K]`` (an ONNX
Runtime session, a TensorRT engine, a quantised graph), is evaluated here exactly as the service
runs it and as ``train.loop.evaluate_run`` evaluates PyTorch checkpoints: stage 1 crops the face box
(by default the tight box of the ground-truth points, i.e. the "client" box) with its crop rule,
every later stage re-crops the original image with ``crop_matrix_from_points`` of the previous
stage's prediction, and each stage's crop-unit output is mapped back to image pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
    tight_box,
    warp_affine,
)
from model_store.preprocess import Normalisation, from_output, to_input
from model_store.schemes import Scheme, get_scheme
from train.data.types import Sample
from train.metrics import DEFAULT_THRESHOLDS, nme_per_sample, summarise

__all__ = [
    "RunStage",
    "StageGeometry",
    "cascade_predict",
    "evaluate_cascade",
    "load_synthetic",
    "stage_inputs",
]

RunStage = Callable[[int, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StageGeometry:
    """What a stage needs besides its network: input size ``S``, crop rule, normalisation."""

    input_size: int
    crop_rule: CropRule
    normalisation: Normalisation

    @classmethod
    def from_spec(cls, spec: Any) -> StageGeometry:
        """From a ``model_store.manifest.StageSpec``."""
        return cls(int(spec.input_size), spec.crop_rule.to_rule(), spec.normalisation.to_normalisation())


def load_synthetic(spec: Mapping[str, Any], scheme: str) -> list[Sample]:
    """Render a synthetic dataset spec (``{kind: synthetic, num, seed, image_size, pose}``) without torch."""
    if spec.get("kind") != "synthetic":
        raise ValueError(f"only synthetic dataset specs are rendered here, got {spec.get('kind')!r}")
    from train.data.synthetic import SyntheticFaces

    faces = SyntheticFaces.from_spec(spec, scheme)
    n = min(len(faces), int(spec["limit"])) if "limit" in spec else len(faces)
    return [faces[i] for i in range(n)]  # sample i does not depend on the others: render only n


def _matrices(
    stage_index: int, geometry: StageGeometry, scheme: Scheme, boxes: np.ndarray, previous: np.ndarray | None
) -> np.ndarray:
    size, rule = geometry.input_size, geometry.crop_rule
    if stage_index == 0:
        return np.stack([crop_matrix_from_box(b, size, rule) for b in boxes])
    if previous is None:
        raise ValueError("a later stage needs the previous stage's points")
    return np.stack([crop_matrix_from_points(p, scheme, size, rule) for p in previous])


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

    Stage 0 crops ``boxes [N, 4]``; later stages re-align on ``previous [N, K, 2]`` image points.
    """
    if stage_index == 0 and boxes is None:
        raise ValueError("stage 0 needs boxes")
    mats = _matrices(
        stage_index, geometry, scheme, np.asarray(boxes) if boxes is not None else np.zeros(0), previous
    )
    crops = np.stack([warp_affine(img, m, geometry.input_size) for img, m in zip(images, mats, strict=True)])
    return to_input(crops, geometry.normalisation), mats


def cascade_predict(
    run_stage: RunStage,
    stages: Sequence[StageGeometry],
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    scheme: Scheme,
    *,
    batch_size: int = 64,
    timings: dict[str, float] | None = None,
) -> list[np.ndarray]:
    """Image-space landmarks ``[N, K, 2]`` after each stage (one array per stage).

    ``images``: N ``[H, W, 3]`` uint8 RGB; ``boxes [N, 4]``: stage-1 face boxes. ``timings`` (if given)
    receives the seconds spent inside ``run_stage`` per stage (``"stage1"``, ...).
    """
    results: list[np.ndarray] = []
    previous: np.ndarray | None = None
    for i, geometry in enumerate(stages):
        x, mats = stage_inputs(images, i, geometry, scheme, boxes=boxes, previous=previous)  # (N,3,S,S)
        outputs = []
        started = time.perf_counter()
        for j in range(0, len(x), batch_size):
            outputs.append(run_stage(i, x[j : j + batch_size]))  # (B, 2K) crop units
        if timings is not None:
            timings[f"stage{i + 1}"] = timings.get(f"stage{i + 1}", 0.0) + time.perf_counter() - started
        out = np.concatenate(outputs) if outputs else np.zeros((0, 2 * scheme.num_points), np.float32)
        crop_pts = from_output(out, scheme.num_points, geometry.input_size)  # (N, K, 2) crop px
        previous = apply_affine(invert_affine(mats), crop_pts)  # (N, K, 2) image px
        results.append(previous)
    return results


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

    ``boxes`` default to the tight boxes of the ground-truth points (the "client" box). The NME
    normaliser is the scheme's (inter-ocular for ibug68, sqrt of the dataset box area for aflw19).
    """
    scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    gt = np.stack([s.points for s in samples]).astype(np.float64)  # (N, K, 2)
    dataset_boxes = np.stack([np.asarray(s.box, dtype=np.float64) for s in samples])
    normaliser = np.asarray(scheme.normaliser_distance(gt, dataset_boxes), dtype=np.float64)
    start_boxes = tight_box(gt) if boxes is None else np.asarray(boxes, dtype=np.float64)
    timings: dict[str, float] = {}
    preds = cascade_predict(
        run_stage,
        stages,
        [s.image for s in samples],
        start_boxes,
        scheme,
        batch_size=batch_size,
        timings=timings,
    )
    report: dict[str, Any] = {"n": len(samples)}
    for k, pred in enumerate(preds, start=1):
        report[f"stage{k}"] = summarise(nme_per_sample(pred, gt, normaliser), thresholds)
    report["final"] = report[f"stage{len(preds)}"]
    report["inference_seconds"] = {k: round(v, 4) for k, v in timings.items()}
    return report
