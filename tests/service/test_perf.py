"""service.perf: FLOP counting on a tiny ONNX graph (hand-computed) and CPU peak parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.perf import count_flops, cpu_peak, parse_cpuinfo


def _tiny_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float16), "w16")  # stored fp16, cast at run time
    g = numpy_helper.from_array(np.zeros((10, 256), np.float32), "g")
    nodes = [
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [w, g],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_flops_of_a_tiny_graph_match_the_hand_count(tmp_path: Path) -> None:
    flops = count_flops(_tiny_model(tmp_path / "tiny.onnx"))
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 * output elements * (Cin * kh * kw) = 13,824
    gemm = 2 * 1 * 10 * 256  # 2 * M * N * K = 5,120
    assert flops["Conv"] == conv and flops["Gemm"] == gemm
    assert flops["total"] == conv + gemm == 18_944


CPUINFO = """processor	: 0
model name	: Intel(R) Xeon(R) Processor
cpu MHz		: 2600.000
flags		: fpu sse sse2 avx fma avx2 avx512f avx512dq

processor	: 1
model name	: Intel(R) Xeon(R) Processor
cpu MHz		: 2600.000
flags		: fpu sse sse2 avx fma avx2 avx512f avx512dq
"""


def test_peak_from_cpuinfo_flags_and_clock() -> None:
    info = parse_cpuinfo(CPUINFO)
    assert info["processors"] == 2 and info["mhz"] == 2600.0 and "avx512f" in info["flags"]
    peak = cpu_peak(CPUINFO)
    assert (peak.isa, peak.lanes, peak.fma_units, peak.cores) == ("avx512f", 16, 2, 2)
    assert peak.gflops == pytest.approx(2 * 2.6 * 2 * 2 * 16)  # 332.8
    avx2 = cpu_peak(CPUINFO.replace(" avx512f avx512dq", ""), cores=1)
    assert (avx2.isa, avx2.lanes) == ("avx2", 8) and avx2.gflops == pytest.approx(2.6 * 2 * 2 * 8)
    assert cpu_peak(CPUINFO, fma_units=1).gflops == pytest.approx(166.4)
    assert "assumed" in peak.assumption


def test_profile_summary_by_category_and_leaf() -> None:
    from service.benchmark import summarise_profile

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
    assert out["by_category_pct"]["crop (model_store.cascade, Pillow)"] == 20.0  # by the caller, not the leaf
    assert out["by_category_pct"]["decode (Pillow)"] == 10.0
    assert out["by_category_pct"]["JSON / response"] == 10.0
    assert next(iter(out["top_leaves_pct"])) == "run (onnxruntime/capi/x.py:406)"


def test_benchmark_headline_ratios_come_from_the_runs_of_the_report() -> None:
    from service.benchmark import headline

    def run(config: str, mode: str, c: int, fps: float) -> dict[str, Any]:
        return {"config": config, "mode": mode, "concurrency": c, "faces_per_s": {"median": fps}}

    best = {"batch": 32, "threads": 2, "spinning": False, "faces_per_s": {"median": 200.0}}
    report: dict[str, Any] = {
        "machine": {"cores": 2},
        "bare": {
            "best_cascade": {**best, "pct_of_peak": {"median": 70.0}},
            "rows": [{"what": "cascade", "threads": 1, "faces_per_s": {"median": 110.0}}],
        },
        "service": {
            "runs": [
                run("default", "client", 1, 60.0),
                run("default", "client", 32, 150.0),
                run("batching_off", "client", 32, 100.0),
                run("timed", "client", 1, 30.0),
                run("timed", "client", 32, 120.0),
                run("h11_asyncio", "client", 32, 125.0),
                run("before", "client", 32, 75.0),
            ]
        },
        "peers": {"dlib": {"available": True, "faces_per_s": {"median": 1100.0}}},
    }
    h = headline(report)
    assert h["service_over_bare_cascade"] == 0.75 and not h["targets"]["service >= 0.8x bare cascade"]
    assert h["batching_gain_at_cmax"] == 1.5
    assert h["greedy_over_timed"] == {"1": 2.0, "32": 1.25}
    assert h["httptools_uvloop_over_h11_asyncio_cmax"] == 1.2
    assert h["after_over_before_client_cmax"] == 2.0
    assert h["wingmark_bare_per_core_over_dlib"] == 0.1
