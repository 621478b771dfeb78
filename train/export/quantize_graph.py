"""Graph facts and rewrites the INT8 quantiser needs (onnx only; no onnxruntime import).

- :func:`depthwise_convs`: the grouped (depthwise) ``Conv`` nodes of a graph. ONNX Runtime's int8
  kernels for them, and the ones the convolutions around them run with VNNI, take *unsigned* 8-bit
  activations (``u8 x s8`` dot products); with signed activations (S8S8) the face-api network ran
  0.1-0.7x float, with unsigned ones 1.3-1.8x (docs/quantize_faceapi_4.1.0.md). :func:`activation_type`
  makes that choice per graph.
- :func:`split_shared_activation_inputs`: where a ``Relu``/``Clip`` reads a tensor that another node
  reads as well (face-api's dense blocks: ``s = a + b; relu(s)`` feeds the next convolution and
  ``s + c`` the next sum), the node producing that tensor is duplicated so the activation has its
  own input. ONNX Runtime's quantiser folds an activation into the quantisation range of its input
  only when the input has a single reader; otherwise the QDQ graph keeps a float island
  (dequantise, Relu, quantise) at each such Relu, and the QOperator graph drops the Relu outright
  (wrong outputs). The duplicated node (an ``Add`` here) is cheap; the float function is unchanged.
"""

from __future__ import annotations

from collections import Counter

import onnx

__all__ = [
    "ACTIVATIONS",
    "activation_type",
    "depthwise_convs",
    "split_shared_activation_inputs",
]

ACTIVATIONS = ("auto", "int8", "uint8")
_FOLDABLE = ("Relu", "Clip")


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the ``Conv`` nodes with ``group > 1`` (depthwise or grouped convolutions)."""
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def activation_type(model: onnx.ModelProto, setting: str = "auto") -> tuple[str, str]:
    """The activations' int8 type for ``model`` (``"int8"`` or ``"uint8"``) and why.

    ``setting`` "int8"/"uint8" forces it; "auto" picks uint8 for graphs with depthwise convolutions
    (measured: signed activations make them slower than float) and int8 (S8S8, ONNX Runtime's
    default) otherwise, which is what the published CNN-6/7 variants were quantised with.
    """
    if setting not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {setting!r}")
    if setting != "auto":
        return setting, f"activations setting is {setting}"
    depthwise = depthwise_convs(model)
    if depthwise:
        return "uint8", (
            f"auto: {len(depthwise)} depthwise Conv nodes (group > 1); ONNX Runtime's fast int8 kernels "
            "take unsigned activations (U8S8)"
        )
    return "int8", "auto: no depthwise Conv; S8S8 (ONNX Runtime's default)"


def split_shared_activation_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` where every ``Relu``/``Clip`` has an input of its own, and how many
    producing nodes were duplicated for that.

    A duplicate is inserted right after the node it copies (same inputs, so the graph stays in
    topological order) and writes ``<tensor>/for_<activation>``.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    readers = Counter(name for node in graph.node for name in node.input)
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    after: dict[int, list[onnx.NodeProto]] = {}  # producer's index -> its copies
    for node in graph.node:
        if node.op_type not in _FOLDABLE or not node.input or readers[node.input[0]] < 2:
            continue
        index = producer.get(node.input[0])
        if index is None or len(graph.node[index].output) != 1:
            continue  # a graph input or initializer, or a node with several outputs: left alone
        tag = "for_" + (node.name or node.output[0]).strip("/").replace("/", "_")
        source = graph.node[index]
        copy = onnx.NodeProto()
        copy.CopyFrom(source)
        copy.name = f"{source.name}/{tag}"
        copy.output[0] = f"{source.output[0]}/{tag}"
        node.input[0] = copy.output[0]
        after.setdefault(index, []).append(copy)
    if not after:
        return out, 0
    nodes = []
    for i, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(after.get(i, []))
    n_copies = len(nodes) - len(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out, n_copies
