from __future__ import annotations

import numpy as np
import pytest

from model_store.preprocess import Normalisation, from_output, to_input


def test_to_input_layout_and_values():
    crops = np.zeros((2, 4, 4, 3), np.float32)
    crops[1, 0, 3] = (255.0, 127.5, 0.0)  # row 0, column 3
    x = to_input(crops, Normalisation())
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[1, :, 0, 3], [127.5 / 128, 0.0, -127.5 / 128])
    np.testing.assert_allclose(x[0, :, 0, 0], -127.5 / 128)


def test_uint8_crops_give_the_float_arithmetic_exactly():
    """The uint8 path (a per-channel table) equals (v - mean) / std in float32, in NCHW order."""
    crops = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    norm = Normalisation(mean=(120.0, 110.5, 100.25), std=(60.0, 64.0, 70.5))
    x = to_input(crops, norm)
    assert x.shape == (3, 3, 5, 7) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, to_input(crops.astype(np.float32), norm))


def test_from_output_is_crop_units_times_size():
    out = np.array([[0.5, 0.25, 1.0, 0.0]])
    np.testing.assert_allclose(from_output(out, 2, 64), [[[32, 16], [64, 0]]])
    with pytest.raises(ValueError):
        from_output(out, 3, 64)
