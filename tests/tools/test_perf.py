"""tools.perf: FLOP counting on a tiny ONNX graph (hand-computed) and CPU peak parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.perf import count_flops, cpu_peak, parse_cpuinfo


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
