"""tools.studies.crop_resolution: crops with less detail, and the study on the embedded default."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.studies.crop_resolution import blur_to, nme_by_resolution


def test_blur_to_keeps_size_and_takes_detail_away() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    assert blur_to(crops, 32) is crops  # the network's own size: unchanged
    low = blur_to(crops, 8)
    assert low.shape == crops.shape and low.dtype == np.uint8
    # noise has detail at every scale: at 8 px most of it is gone (far less variance between neighbours)
    assert (
        np.abs(np.diff(low.astype(float), axis=1)).mean()
        < 0.5 * np.abs(np.diff(crops.astype(float), axis=1)).mean()
    )
    flat = np.full((1, 32, 32, 3), 77, np.uint8)  # a flat crop has no detail to lose
    np.testing.assert_array_equal(blur_to(flat, 8), flat)


def test_less_detail_costs_the_default_model_accuracy(tmp_path: Path) -> None:
    """The embedded 19-point default on a few renders: at its own size it reads its NME, and with the
    detail of a 24-px crop it is clearly worse."""
    spec = {"kind": "synthetic", "num": 8, "seed": 2, "image_size": 256, "cache_dir": str(tmp_path)}
    row = nme_by_resolution("faceapi-aflw19@4.3.0", spec, resolutions=(112, 24))
    assert row["n"] == 8 and row["input_size"] == 112
    full, low = row["by_resolution"]["112"]["nme"], row["by_resolution"]["24"]["nme"]
    assert 0.005 < full < 0.08
    assert low > full * 1.2
