"""tools.studies.crop_nme on four synthetic faces: one NME per installed crop backend, the recorded
figure beside it, and the crop backend restored afterwards."""

from __future__ import annotations

import model_store.crop as crop_module
from tools.studies.crop_nme import nme_by_backend
from train.export.evaluate import load_synthetic


def test_nme_per_crop_backend_against_the_recorded_figure() -> None:
    samples = load_synthetic({"kind": "synthetic", "num": 4, "seed": 3, "image_size": 128}, "ibug68")
    before = crop_module.crop_backend
    out = nme_by_backend("cnn67-ibug68", samples, recorded=0.05)
    assert crop_module.crop_backend is before
    backends = [k for k in out if k.startswith("uint8_")]
    assert "uint8_numpy" in backends and ("uint8_opencv" in backends) == (before() == "opencv")
    assert out["n"] == 4 and all(0 < out[k] < 100 for k in backends)
    assert out["recorded (float32 gather crop)"] == 5.0
    assert out["largest_change_points"] == round(max(abs(out[k] - 5.0) for k in backends), 4)
