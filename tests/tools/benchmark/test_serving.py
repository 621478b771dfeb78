"""tools.benchmark.serving without servers: the py-spy profile summary."""

from __future__ import annotations

from tools.benchmark.serving import summarise_profile


def test_profile_summary_by_category_and_leaf() -> None:
    raw = "\n".join(
        [
            "MainThread;run (uvicorn/main.py:1);run (onnxruntime/capi/x.py:406) 6",
            "wingmark-decode_0;crop (model_store/cascade.py:99);warp (PIL/Image.py:10) 2",
            "wingmark-decode_0;decode_image (service/decode.py:50);load (PIL/ImageFile.py:425) 1",
            "MainThread;render (starlette/responses.py:9);dumps (json/__init__.py:231) 1",
            "not a sample line",
        ]
    )
    out = summarise_profile(raw)
    assert out["samples"] == 10
    assert out["by_category_pct"]["inference (ONNX Runtime)"] == 60.0
    assert out["by_category_pct"]["crop (model_store.crop, to_input)"] == 20.0  # by the caller, not the leaf
    assert out["by_category_pct"]["decode (Pillow)"] == 10.0
    assert out["by_category_pct"]["JSON / response"] == 10.0
    assert next(iter(out["top_leaves_pct"])) == "run (onnxruntime/capi/x.py:406)"
