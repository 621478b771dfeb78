"""Pure parts of ``wingmark benchmark``: FLOPs counted from an ONNX graph, the CPU's fp32 peak.

FLOPs: a multiply-add counts as 2 FLOPs; ``Conv`` costs ``2 * N * Cout * Hout * Wout * (Cin / groups)
* kh * kw``, ``Gemm`` and ``MatMul`` ``2 * M * N * K``; bias adds, ReLU and pooling are left out (well
under 1 % of a CNN's work). Shapes come from ONNX shape inference with the batch axis set to 1.

Peak: ``cores * clock * FMA units * 2 * fp32 lanes`` where lanes follow the widest vector flag
(avx512f 16, avx2/fma 8, sse 4). FMA units per core are not visible in /proc/cpuinfo: AVX-512 server
cores (Xeon Skylake-SP and later, Gold/Platinum) have two 512-bit FMA units, some parts one; the
assumption is a parameter and is written into every report.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuPeak", "count_flops", "cpu_peak", "parse_cpuinfo"]


def count_flops(model: Any) -> dict[str, float]:
    """FLOPs of one sample through an ONNX model (path or ``onnx.ModelProto``).

    Returns ``{op_type: flops, ..., "total": flops}``.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = onnx.load(str(model)) if isinstance(model, str | Path) else model
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # a copy: the batch axis is edited
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(proto)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)

    def attr(node: Any, name: str, default: Any) -> Any:
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    out: dict[str, float] = {}
    for node in inferred.graph.node:
        flops = 0.0
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # [Cout, Cin/groups, kh, kw]
            y = shapes[node.output[0]]  # [N, Cout, Hout, Wout]
            flops = 2.0 * math.prod(y) * math.prod(w[1:])
        elif node.op_type == "Gemm":
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            m, k = (a[1], a[0]) if attr(node, "transA", 0) else (a[0], a[1])
            n = b[0] if attr(node, "transB", 0) else b[1]
            flops = 2.0 * m * n * k
        elif node.op_type == "MatMul":
            a, y = shapes[node.input[0]], shapes[node.output[0]]
            flops = 2.0 * math.prod(y) * a[-1]
        if flops:
            out[node.op_type] = out.get(node.op_type, 0.0) + flops
    out["total"] = sum(out.values())
    return out


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Processors, flags (of the first processor), clock (MHz, the first ``cpu MHz``) and model name."""
    processors = len(re.findall(r"^processor\s*:", text, flags=re.M))
    flags_m = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.M)
    mhz_m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, flags=re.M)
    name_m = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.M)
    return {
        "processors": processors,
        "flags": set(flags_m.group(1).split()) if flags_m else set(),
        "mhz": float(mhz_m.group(1)) if mhz_m else None,
        "model_name": name_m.group(1).strip() if name_m else "",
    }


@dataclass(frozen=True)
class CpuPeak:
    cores: int
    ghz: float
    isa: str  # avx512f | avx2 | sse
    lanes: int  # fp32 lanes per vector
    fma_units: int
    gflops: float  # cores * ghz * fma_units * 2 * lanes
    assumption: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_peak(
    text: str, cores: int | None = None, *, fma_units: int | None = None, ghz: float | None = None
) -> CpuPeak:
    """The fp32 peak of ``cores`` cores described by /proc/cpuinfo ``text``.

    ``fma_units`` default: 2 for AVX-512 and for AVX2 cores (one per 512-bit / 256-bit port pair on
    current server parts), 1 without FMA. ``ghz`` default: the cpuinfo clock (a VM reports its base).
    """
    info = parse_cpuinfo(text)
    flags = info["flags"]
    n = cores if cores is not None else max(1, info["processors"])
    if "avx512f" in flags:
        isa, lanes = "avx512f", 16
    elif "avx2" in flags or "avx" in flags:
        isa, lanes = ("avx2" if "avx2" in flags else "avx"), 8
    else:
        isa, lanes = "sse", 4
    has_fma = "fma" in flags or isa == "avx512f"
    units = fma_units if fma_units is not None else (2 if has_fma else 1)
    flops_per_unit = 2 if has_fma else 1  # one fused multiply-add = 2 FLOPs; else mul or add alone
    clock = ghz if ghz is not None else (info["mhz"] or 0.0) / 1000.0
    gflops = n * clock * units * flops_per_unit * lanes
    assumption = (
        f"{n} cores x {clock:.2f} GHz x {units} FMA units x {flops_per_unit} x {lanes} fp32 lanes ({isa}); "
        f"FMA units per core are assumed, not read (cpuinfo does not show them); clock from "
        f"{'the caller' if ghz is not None else '/proc/cpuinfo (base clock in a VM; turbo may be higher)'}"
    )
    return CpuPeak(n, clock, isa, lanes, units, gflops, assumption)
