"""train.export.evaluate: aflw19 NME divides by the dataset's face box, not by the landmarks' tight box."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.geometry import CropRule, tight_box
from model_store.preprocess import Normalisation
from train.data.types import Sample
from train.export.evaluate import StageGeometry, cascade_predict, evaluate_cascade

STAGES = [StageGeometry(32, CropRule(), Normalisation()), StageGeometry(48, CropRule(), Normalisation())]


def run_stage(stage: int, x: np.ndarray) -> np.ndarray:
    """A deterministic stand-in network: a fixed crop-unit shape nudged by the crop's mean brightness."""
    k = 19
    t = np.linspace(0, 2 * np.pi, k, endpoint=False)
    shape = np.stack([0.5 + 0.3 * np.cos(t), 0.5 + 0.3 * np.sin(t)], axis=1).reshape(-1)
    return np.stack([shape + 0.01 * float(xi.mean()) for xi in x]).astype(np.float32)


def test_aflw19_nme_divides_by_the_datasets_face_box_not_the_tight_box() -> None:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
        points = rng.uniform(50, 110, (19, 2)).astype(np.float32)
        x1, y1, x2, y2 = tight_box(points)
        box = np.array([x1 - 20 - 5 * i, y1 - 30, x2 + 20, y2 + 10 * i], np.float32)  # a looser face box
        samples.append(Sample(image, points, box, "aflw19"))
    report = evaluate_cascade(run_stage, STAGES, samples, "aflw19")
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    pred = cascade_predict(run_stage, STAGES, [s.image for s in samples], tight_box(gt), "aflw19")[-1]
    dist = np.linalg.norm(pred - gt, axis=-1).mean(axis=1)  # [N] mean point error, px
    boxes = np.stack([s.box for s in samples]).astype(np.float64)
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    tight = tight_box(gt)
    tight_sizes = np.sqrt((tight[:, 2] - tight[:, 0]) * (tight[:, 3] - tight[:, 1]))
    assert report["final"]["nme"] == pytest.approx(float((dist / sizes).mean()), rel=1e-9)
    assert abs(report["final"]["nme"] - float((dist / tight_sizes).mean())) > 0.1 * report["final"]["nme"]
