from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tools.studies.decode_floor import SCALES, measure, ratio_ceiling, time_ms


def test_ratio_ceiling_is_the_cascade_share_of_the_cpu_time():
    # 2.09 CPU ms a face for the cascade, 3.64 ms to decode the frame: at most 0.365x the bare cascade
    assert ratio_ceiling(2.09, 3.64) == pytest.approx(2.09 / 5.73)
    assert ratio_ceiling(1.0, 0.0) == 1.0
    assert ratio_ceiling(1.0, 1.0) == 0.5
    with pytest.raises(ValueError):
        ratio_ceiling(0.0, 1.0)


def test_time_ms_reports_min_and_median():
    calls = []
    out = time_ms(lambda: calls.append(1), repeats=5)
    assert len(calls) == 6  # one warm-up call
    assert 0 <= out["min"] <= out["median"]


def test_measure_decodes_a_real_jpeg_at_every_scale():
    rng = np.random.default_rng(0)
    pixels = (rng.random((96, 160, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    rows = measure(buf.getvalue(), (160, 96), repeats=3)
    assert set(rows) == {f"{lib} 1/{s}" for lib in ("simplejpeg", "pillow draft") for s in SCALES}
    assert all(r["min"] > 0 for r in rows.values())
