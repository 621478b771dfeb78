"""model_store.crop: the one uint8 crop (OpenCV where installed, else numpy) against the exact float
crop, which itself equals geometry.warp_affine."""

from __future__ import annotations

import numpy as np
import pytest

import model_store.crop as crop_module
from model_store.crop import CROP_BACKENDS, crop, crop_backend, crop_reference
from model_store.geometry import CropRule, crop_matrix_from_box, similarity, warp_affine

RULE = CropRule(scale=1.25, shift_x=0.0, shift_y=0.05)
CASES = [
    ((60.0, 50.0), 40.0, 0.0),
    ((10.0, 5.0), 70.0, 0.4),
    ((118.0, 90.0), 33.3, -1.2),
    ((400.0, 400.0), 20.0, 0.0),
]
IDS = ["inside", "top-left-corner", "bottom-right-rotated", "outside"]


def _backends() -> list[str]:
    """numpy always; opencv where cv2 is installed (the fast extra)."""
    return [b for b in CROP_BACKENDS if b == "numpy" or crop_module._cv2() is not None]


def _smooth(h: int, w: int) -> np.ndarray:
    """A photo-like image: slow gradients, no pixel differs from its neighbour by more than a few levels."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    channels = [
        127 + 100 * np.sin(x / 9.0 + k) * np.cos(y / 13.0 - k) + 0.2 * (x - y) * (k - 1) for k in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("centre", "side", "angle"), CASES, ids=IDS)
def test_reference_crop_matches_warp_affine(centre: tuple[float, float], side: float, angle: float) -> None:
    image = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    m = similarity(centre, side, 48, angle)
    got = crop_reference(image, m, 48)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, warp_affine(image, m, 48), atol=1e-3)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize(("centre", "side", "angle"), CASES, ids=IDS)
def test_uint8_crop_is_the_float_crop_to_a_grey_level(
    backend: str, centre: tuple[float, float], side: float, angle: float
) -> None:
    image = _smooth(100, 120)
    m = similarity(centre, side, 48, angle)
    got = crop(image, m, 48, backend=backend)  # type: ignore[arg-type]
    exact = crop_reference(image, m, 48)
    assert got.shape == (48, 48, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(np.float32) - exact)
    if backend == "numpy":  # the exact crop, rounded
        np.testing.assert_array_equal(got, np.rint(exact).astype(np.uint8))
    else:  # OpenCV: samples on a 1/32 px grid, fixed-point weights; the image's edge jumps to 0
        inner = diff[4:-4, 4:-4] if IDS[CASES.index((centre, side, angle))] == "inside" else diff
        assert inner.mean() < 0.7 and np.percentile(inner, 99) <= 3.0, (inner.mean(), inner.max())
    if IDS[CASES.index((centre, side, angle))] == "outside":
        assert not got.any()


@pytest.mark.parametrize("backend", _backends())
def test_noise_image_strided_and_grey_images(backend: str) -> None:
    image = np.random.default_rng(3).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    m = similarity((60.0, 45.0), 50.0, 32, 0.3)
    for img in (image, image[:, ::-1], image[::2, ::2], image[..., 1]):
        got = crop(img, m, 32, backend=backend)  # type: ignore[arg-type]
        exact = crop_reference(img, m, 32)
        assert got.shape == exact.shape and got.dtype == np.uint8
        # noise: neighbours differ by up to 255, so OpenCV's 1/32 px sample grid moves values by a few levels
        diff = np.abs(got.astype(np.float32) - exact)
        assert diff.mean() < 1.5 and diff.max() <= 9, (diff.mean(), diff.max())


@pytest.mark.parametrize("backend", _backends())
def test_crop_cost_follows_the_crop_not_the_window(backend: str) -> None:
    """A whole-image box on a large image: crop-sized allocations only, never a copy of the window
    (a float32 window of this image would be 190 MB, a uint8 one 48 MB)."""
    import tracemalloc

    image = np.zeros((4000, 4000, 3), dtype=np.uint8)
    image[::7] = 200
    whole = crop_matrix_from_box(np.array([0.0, 0.0, 4000.0, 4000.0]), 64, RULE)
    tracemalloc.start()
    try:
        got = crop(image, whole, 64, backend=backend)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, peak
    assert np.abs(got.astype(np.float32) - warp_affine(image, whole, 64)).mean() < 1.0


def test_crop_writes_into_the_given_buffer_and_checks_it() -> None:
    image = _smooth(80, 80)
    m = similarity((40.0, 40.0), 30.0, 16, 0.1)
    batch = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    assert np.shares_memory(crop(image, m, 16, out=batch[1]), batch)
    np.testing.assert_array_equal(batch[1], crop(image, m, 16))
    assert not batch[0].any()
    with pytest.raises(ValueError, match="uint8"):
        crop(image, m, 16, out=np.zeros((16, 16, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        crop(image, m, 16, out=np.zeros((8, 16, 3), dtype=np.uint8))


def test_float_images_are_cropped_exactly_and_rounded() -> None:
    image = _smooth(60, 60).astype(np.float32) + 0.3
    m = similarity((30.0, 30.0), 25.0, 16, 0.2)
    np.testing.assert_array_equal(crop(image, m, 16), np.rint(crop_reference(image, m, 16)).astype(np.uint8))


def test_the_opencv_backend_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crop_module, "_cv2", lambda: None)
    assert crop_backend() == "numpy"
    with pytest.raises(RuntimeError, match=r"wingmark\[fast\]"):
        crop(_smooth(20, 20), similarity((10.0, 10.0), 8.0, 8, 0.0), 8, backend="opencv")
