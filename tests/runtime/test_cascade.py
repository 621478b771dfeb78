"""runtime.cascade: the one stage loop over model_store's cascade geometry."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.cascade import CascadeGeometry, StageGeometry
from model_store.geometry import (
    CropRule,
    apply_affine,
    crop_matrix_from_box,
    crop_matrix_from_points,
    invert_affine,
)
from model_store.preprocess import Normalisation
from model_store.schemes import get_scheme
from runtime.cascade import VIEW_SHIFT, Cascade, RunStage, view_offsets

SCHEME = get_scheme("ibug68")
RULE = CropRule(scale=1.25, shift_x=0.0, shift_y=0.05)


def _mean_face() -> np.ndarray:
    """[K, 2] crop units: a face shape with a tilted eye line (so stage 2 must de-rotate)."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([0.5 + 0.3 * np.cos(t), 0.5 + 0.35 * np.sin(t)], axis=1)
    pts[36:42] = [0.35, 0.40]
    pts[42:48] = [0.65, 0.46]  # left eye lower than right: ~11 degrees of roll
    return pts


def test_run_chains_stage_two_on_the_stage_one_points() -> None:
    """Hand-derived: stage 2's crop is crop_matrix_from_points(stage-1 image points); its output maps back."""
    stages = [StageGeometry(64, RULE, Normalisation()), StageGeometry(128, CropRule(), Normalisation())]
    geometry = CascadeGeometry(stages, SCHEME)
    face = _mean_face()
    second = face + 0.01  # what the fake stage 2 predicts, crop units
    calls: list[tuple[int, tuple[int, ...]]] = []

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        calls.append((i, x.shape))
        out = face if i == 0 else second
        return np.tile(out.reshape(1, -1), (len(x), 1)).astype(np.float32)

    image = np.random.default_rng(2).integers(0, 256, (200, 180, 3), dtype=np.uint8)
    boxes = np.array([[40.0, 50.0, 140.0, 170.0], [20.0, 10.0, 80.0, 70.0]])
    timings: dict[str, float] = {}
    stage1, final = Cascade(geometry, run_stage).run([image, image], boxes, timings=timings)
    assert calls == [(0, (2, 3, 64, 64)), (1, (2, 3, 128, 128))]
    assert set(timings) == {"stage1", "stage2"}
    for i in range(2):
        m1 = crop_matrix_from_box(boxes[i], 64, RULE)
        f32 = face.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(stage1[i], apply_affine(invert_affine(m1), f32 * 64), atol=1e-4)
        m2 = crop_matrix_from_points(stage1[i], SCHEME, 128, CropRule())
        s32 = second.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(final[i], apply_affine(invert_affine(m2), s32 * 128), atol=1e-4)
    assert np.abs(final - stage1).mean() > 1.0  # the second stage changed the answer


def test_run_in_batches_equals_one_call_and_checks_outputs() -> None:
    stages = [StageGeometry(32, RULE, Normalisation()), StageGeometry(48, RULE, Normalisation())]
    geometry = CascadeGeometry(stages, SCHEME)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (90, 90, 3), dtype=np.uint8) for _ in range(5)]
    boxes = np.array([[10.0 + i, 12.0, 70.0 + i, 80.0] for i in range(5)])

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:  # depends on the pixels, row by row
        return np.tile(_mean_face().reshape(1, -1), (len(x), 1)) + x.mean(axis=(1, 2, 3))[:, None] * 0.01

    whole = Cascade(geometry, run_stage).run(images, boxes)
    split = Cascade(geometry, run_stage).run(images, boxes, batch_size=2)
    for a, b in zip(whole, split, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    with pytest.raises(RuntimeError, match="rows"):
        Cascade(geometry, lambda i, x: np.zeros((1, 136), np.float32)).run(images, boxes)
    with pytest.raises(RuntimeError, match="non-finite"):
        Cascade(geometry, lambda i, x: np.full((len(x), 136), np.nan, np.float32)).run(images, boxes)


def test_run_batch_of_prepared_faces_equals_run() -> None:
    """The service's on-device mode (prepare in the crop thread, run_batch on the device) is run()."""
    stages = [StageGeometry(32, RULE, Normalisation()), StageGeometry(48, RULE, Normalisation())]

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        return np.tile(_mean_face().reshape(1, -1), (len(x), 1)) + x.mean(axis=(1, 2, 3))[:, None] * 0.01

    cascade = Cascade(CascadeGeometry(stages, SCHEME), run_stage)
    rng = np.random.default_rng(4)
    a, b = (rng.integers(0, 256, (90, 90, 3), dtype=np.uint8) for _ in range(2))
    boxes = np.array([[10.0, 12.0, 70.0, 80.0], [20.0, 5.0, 60.0, 50.0]])
    jobs = cascade.prepare(a, boxes[:1]) + cascade.prepare(b, boxes[1:])  # faces of two images, one batch
    together = cascade.run_batch(jobs)
    np.testing.assert_allclose(together[0], cascade.run([a], boxes[:1])[-1][0], atol=1e-9)
    np.testing.assert_allclose(together[1], cascade.run([b], boxes[1:])[-1][0], atol=1e-9)
    mats, x = cascade.stage_inputs(0, a, boxes=boxes)  # one stage at a time, as the pipelined service does
    first = cascade.points(0, run_stage(0, x), mats)
    mats2, x2 = cascade.stage_inputs(1, a, previous=first)
    np.testing.assert_allclose(
        cascade.points(1, run_stage(1, x2), mats2), cascade.run([a, a], boxes)[-1], atol=1e-9
    )


def test_view_offsets_are_the_crop_then_axis_then_diagonal_moves() -> None:
    assert view_offsets(1).tolist() == [[0.0, 0.0]]
    five = view_offsets(5)
    np.testing.assert_allclose(five, VIEW_SHIFT * np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]]))
    nine = view_offsets(9)
    np.testing.assert_allclose(nine[:5], five)
    np.testing.assert_allclose(np.hypot(*nine[5:].T), VIEW_SHIFT)  # diagonals as far as the axis moves
    np.testing.assert_allclose(nine.sum(axis=0), 0.0, atol=1e-12)  # symmetric: no net shift
    for bad in (0, 2, 4, 10):
        with pytest.raises(ValueError, match="views"):
            view_offsets(bad)


def _pixel_stage(i: int, x: np.ndarray) -> np.ndarray:
    """A stage whose answer depends on its crop's pixels, row by row."""
    return np.tile(_mean_face().reshape(1, -1), (len(x), 1)) + x.mean(axis=(1, 2, 3))[:, None] * 0.01


def _three_faces(seed: int) -> tuple[CascadeGeometry, list[np.ndarray], np.ndarray]:
    """A two-stage geometry (the last re-aligned on the points) and three faces in images of their own."""
    stages = [StageGeometry(32, RULE, Normalisation()), StageGeometry(48, CropRule(), Normalisation())]
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (120, 110, 3), dtype=np.uint8) for _ in range(3)]
    boxes = np.array([[10.0, 12.0, 90.0, 100.0], [20.0, 5.0, 70.0, 60.0], [5.0, 30.0, 100.0, 115.0]])
    return CascadeGeometry(stages, SCHEME), images, boxes


def _counted(calls: list[tuple[int, int]]) -> RunStage:
    """:func:`_pixel_stage`, recording each call's (stage, crops) in ``calls``."""

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        calls.append((i, len(x)))
        return _pixel_stage(i, x)

    return run_stage


@pytest.mark.parametrize("views", [5, 9])
def test_views_average_the_last_stage_over_moved_crops(views: int) -> None:
    """Hand-derived: the last stage re-aligns on the stage-1 points moved by each offset times the face
    size (sqrt of the points' tight box area), and its answer is the mean of the views mapped back."""
    geometry, images, boxes = _three_faces(5)
    calls: list[tuple[int, int]] = []
    run_stage = _counted(calls)
    cascade = Cascade(geometry, run_stage, views)
    assert cascade.views == views and not cascade.viewed(0) and cascade.viewed(1)
    stage1, final = cascade.run(images, boxes)
    assert calls == [(0, 3), (1, 3 * views)]
    np.testing.assert_allclose(stage1, Cascade(geometry, _pixel_stage).run(images, boxes)[0], atol=1e-9)
    for n, (image, pts) in enumerate(zip(images, stage1, strict=True)):
        size = np.sqrt(np.prod(pts.max(axis=0) - pts.min(axis=0)))
        want = []
        for dx, dy in view_offsets(views):
            m = crop_matrix_from_points(pts + np.array([dx, dy]) * size, SCHEME, 48, CropRule())
            x = geometry.inputs(1, [image], m[None])
            out = _pixel_stage(1, x).reshape(-1, 2).astype(np.float64)
            want.append(apply_affine(invert_affine(m), out * 48))
        np.testing.assert_allclose(final[n], np.mean(want, axis=0), atol=1e-4)
        assert np.abs(want[1] - want[0]).max() > 1.0  # each view's crop moved (px)
    # the service's two paths: prepared faces through run_batch, and one stage at a time
    jobs = [
        job for image, box in zip(images, boxes, strict=True) for job in cascade.prepare(image, box[None])
    ]
    np.testing.assert_allclose(np.stack(cascade.run_batch(jobs)), final, atol=1e-9)
    mats, x = cascade.stage_inputs(1, images[0], previous=stage1[:1])
    assert len(mats) == len(x) == views
    np.testing.assert_allclose(cascade.points(1, _pixel_stage(1, x), mats), final[:1], atol=1e-9)
    # batch_size counts crops: split calls give the same points
    np.testing.assert_allclose(cascade.run(images, boxes, batch_size=4)[-1], final, atol=1e-9)


def test_a_one_stage_model_runs_its_crop_alone_whatever_the_views() -> None:
    geometry = CascadeGeometry([StageGeometry(32, RULE, Normalisation())], SCHEME)
    cascade = Cascade(geometry, _pixel_stage, 5)
    assert cascade.views == 1 and not cascade.viewed(0)
    image = np.random.default_rng(6).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    box = np.array([[10.0, 12.0, 70.0, 80.0]])
    np.testing.assert_allclose(
        cascade.run([image], box)[0], Cascade(geometry, _pixel_stage).run([image], box)[0]
    )


def test_a_calls_views_override_the_cascades_own() -> None:
    """Every step takes a call's own views: run, stage_inputs/points and prepared faces of mixed views
    in one run_batch (grouped, in the jobs' order) equal a cascade built with those views."""
    geometry, images, boxes = _three_faces(7)
    calls: list[tuple[int, int]] = []
    run_stage = _counted(calls)
    cascade = Cascade(geometry, run_stage)  # its own: 1
    assert [cascade.views_for(v) for v in (None, 1, 5, 9)] == [1, 1, 5, 9] and cascade.viewed(1, 5)
    with pytest.raises(ValueError, match="views"):
        cascade.views_for(4)
    with pytest.raises(ValueError, match="views"):
        cascade.prepare(images[0], boxes[:1], views=3)
    own = {v: Cascade(geometry, _pixel_stage, v).run(images, boxes)[-1] for v in (1, 5, 9)}
    assert np.abs(own[5] - own[1]).max() > 1e-3  # the views can be told apart
    for v in (5, 9):
        calls.clear()
        np.testing.assert_allclose(cascade.run(images, boxes, views=v)[-1], own[v], atol=1e-9)
        assert calls == [(0, 3), (1, 3 * v)]
    asked = [5, None, 9]  # one face each, in one batch; None: the cascade's own
    jobs = [
        job
        for image, box, face_views in zip(images, boxes, asked, strict=True)
        for job in cascade.prepare(image, box[None], views=face_views)
    ]
    together = cascade.run_batch(jobs)
    for n, face_views in enumerate(asked):
        np.testing.assert_allclose(together[n], own[face_views or 1][n], atol=1e-9)
    first = cascade.run(images[:1], boxes[:1])[0]
    mats, x = cascade.stage_inputs(1, images[0], previous=first, views=9)
    assert len(mats) == len(x) == 9
    np.testing.assert_allclose(cascade.points(1, _pixel_stage(1, x), mats, 9), own[9][:1], atol=1e-9)
    one_stage = Cascade(CascadeGeometry(geometry.stages[:1], SCHEME), _pixel_stage)
    assert one_stage.views_for(9) == 1
