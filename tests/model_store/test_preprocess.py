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


def test_from_output_is_crop_units_times_size():
    out = np.array([[0.5, 0.25, 1.0, 0.0]])
    np.testing.assert_allclose(from_output(out, 2, 64), [[[32, 16], [64, 0]]])
    with pytest.raises(ValueError):
        from_output(out, 3, 64)
