"""The cascade on the device worker's side: crops, stage chaining and the mapping back to image pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.geometry import similarity, warp_affine
from model_store.store import ModelStore
from service.backends import create_backend
from service.pipeline import Cascade, crop


@pytest.mark.parametrize(
    ("centre", "side", "angle"),
    [
        ((60.0, 50.0), 40.0, 0.0),
        ((10.0, 5.0), 70.0, 0.4),
        ((118.0, 90.0), 33.3, -1.2),
        ((400.0, 400.0), 20.0, 0.0),
    ],
    ids=["inside", "top-left-corner", "bottom-right-rotated", "outside"],
)
def test_windowed_crop_equals_warp_affine(centre: tuple[float, float], side: float, angle: float) -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    m = similarity(centre, side, 48, angle)
    expected = warp_affine(image, m, 48)
    np.testing.assert_allclose(crop(image, m, 48), expected, atol=1e-4)


@pytest.fixture(scope="module")
def cascade(test_store: Path) -> Cascade:
    model = ModelStore(test_store).resolve("test-ibug68")
    return Cascade(model, create_backend("onnxruntime", model, max_batch_size=8))


def _face_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))  # [192, 192, 3], smooth enough to move with


def test_landmarks_move_with_the_image(cascade: Cascade) -> None:
    image = _face_image(1)
    box = np.array([[40.0, 30.0, 150.0, 160.0]])
    (pts,) = cascade.run_batch(cascade.prepare(image, box))
    assert pts.shape == (68, 2)
    shifted = np.zeros((192 + 37, 192 + 21, 3), np.uint8)
    shifted[37:, 21:] = image  # content moved by (+21, +37) pixels
    (moved,) = cascade.run_batch(cascade.prepare(shifted, box + [21, 37, 21, 37]))
    np.testing.assert_allclose(moved, pts + [21, 37], atol=1e-3)


def test_landmarks_follow_the_box_scale_and_stay_in_the_crop(cascade: Cascade) -> None:
    image = _face_image(2)
    big = np.kron(image, np.ones((2, 2, 1), dtype=np.uint8))  # the same picture at twice the size
    box = np.array([[40.0, 30.0, 150.0, 160.0]])
    (pts,) = cascade.run_batch(cascade.prepare(image, box))
    (pts2,) = cascade.run_batch(cascade.prepare(big, box * 2))
    np.testing.assert_allclose(pts2, pts * 2, atol=0.05 * 130)  # bilinear sampling differs slightly
    side = 1.25 * 130  # the crop of the default rule around the box
    centre = np.array([95.0, 95.0])
    assert (np.abs(pts - centre) <= side / 2).all()


def test_a_batch_gives_each_face_its_own_answer(cascade: Cascade) -> None:
    images = [_face_image(s) for s in range(5)]
    boxes = [np.array([[10.0 + 7 * i, 20.0, 120.0 + 7 * i, 150.0]]) for i in range(5)]
    jobs = [job for img, b in zip(images, boxes, strict=True) for job in cascade.prepare(img, b)]
    together = cascade.run_batch(jobs)
    alone = [cascade.run_batch([job])[0] for job in jobs]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert not np.allclose(together[0], together[1], atol=1.0)  # different faces, different answers
