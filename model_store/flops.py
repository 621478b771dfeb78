"""FLOPs of one sample through an ONNX graph, counted from the graph (no run).

A multiply-add counts as 2 FLOPs; ``Conv`` costs ``2 * N * Cout * Hout * Wout * (Cin / groups) * kh * kw``,
``Gemm`` and ``MatMul`` ``2 * M * N * K``; bias adds, ReLU and pooling are left out (well under 1 % of a
CNN's work). Shapes come from ONNX shape inference with the batch axis set to 1. A tensor whose size depends
on the data (the rows a pose gate sends to its second network, ``train.export.gate``) has an unknown
dimension and its work counts zero; a flip-averaged stage (``train.export.flip``) counts its network twice.
Used by ``wingmark benchmark`` (``tools.perf``) and recorded in model manifests at publish time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["count_flops"]


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
