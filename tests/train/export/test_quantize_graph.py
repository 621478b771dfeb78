"""The quantiser's graph facts and rewrites (train.export.quantize_graph), on a small dense block built
like face-api's: a Relu and the next sum read the same sum, and a depthwise convolution."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from train.export.parity import onnx_runtime_session, run_onnx
from train.export.quantize import quantize_stage
from train.export.quantize_graph import activation_type, depthwise_convs, split_shared_activation_inputs


def _dense_block(depthwise: bool = True) -> onnx.ModelProto:
    """input [N, 3, 8, 8] -> a = relu(conv) ; b = dwconv(a) ; s = a + b ; c = conv1x1(relu(s)) ;
    t = s + c ; out = gemm(flatten(relu(t))) [N, 6]."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=shape) * 0.3).astype(np.float32), name)

    groups = 4 if depthwise else 1
    inits = [
        init("w0", 4, 3, 3, 3),
        init("b0", 4),
        init("w1", 4, 4 // groups, 3, 3),
        init("b1", 4),
        init("w2", 4, 4, 1, 1),
        init("b2", 4),
        init("wf", 6, 4 * 8 * 8),
        init("bf", 6),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["a"], name="relu0"),
        helper.make_node("Conv", ["a", "w1", "b1"], ["b"], name="dw", pads=[1, 1, 1, 1], group=groups),
        helper.make_node("Add", ["a", "b"], ["s"], name="add0"),
        helper.make_node("Relu", ["s"], ["r"], name="relu1"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["c"], name="pw"),
        helper.make_node("Add", ["s", "c"], ["t"], name="add1"),
        helper.make_node("Relu", ["t"], ["u"], name="relu2"),
        helper.make_node("Flatten", ["u"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


def test_depthwise_convs_and_the_activation_choice() -> None:
    assert depthwise_convs(_dense_block()) == ["dw"]
    assert depthwise_convs(_dense_block(depthwise=False)) == []
    assert activation_type(_dense_block())[0] == "uint8"
    assert activation_type(_dense_block(depthwise=False))[0] == "int8"
    assert activation_type(_dense_block(), "int8") == ("int8", "activations setting is int8")
    with pytest.raises(ValueError, match="activations"):
        activation_type(_dense_block(), "int4")


def test_split_gives_every_relu_its_own_input_and_keeps_the_function(tmp_path: Path) -> None:
    model = _dense_block()
    split, n = split_shared_activation_inputs(model)
    assert n == 1  # relu1 read s, which add1 reads too; relu0's and relu2's inputs had one reader
    readers = Counter(i for node in split.graph.node for i in node.input)
    assert all(readers[node.input[0]] == 1 for node in split.graph.node if node.op_type == "Relu")
    assert [node.op_type for node in split.graph.node].count("Add") == 3
    assert len(model.graph.node) == 10  # the input is left as it was
    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    onnx.save(model, str(paths[0]))
    onnx.save(split, str(paths[1]))
    x = _inputs(4, 1)
    a, b = (run_onnx(onnx_runtime_session(p), x) for p in paths)
    np.testing.assert_array_equal(a, b)
    assert split_shared_activation_inputs(split)[1] == 0  # nothing left to split


def test_static_quantisation_of_a_dense_block_folds_every_relu(tmp_path: Path) -> None:
    """uint8 activations chosen for the depthwise graph, no float Relu left between quantise and
    dequantise nodes, and the outputs close to float's."""
    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(_dense_block(), str(src))
    info = quantize_stage(src, dst, "static", _inputs(64, 2))
    assert info["activations"] == "uint8" and info["activation_inputs_split"] == 1
    assert info["depthwise_convs"] == 1
    ops = Counter(node.op_type for node in onnx.load(str(dst)).graph.node)
    assert ops["Relu"] == 0 and ops["QuantizeLinear"] > 0
    zero_points = [
        numpy_helper.to_array(i)
        for i in onnx.load(str(dst)).graph.initializer
        if i.name.endswith("zero_point") and i.data_type == TensorProto.UINT8
    ]
    assert zero_points  # unsigned activations
    x = _inputs(16, 3)
    ref = run_onnx(onnx_runtime_session(src), x)
    got = run_onnx(onnx_runtime_session(dst), x)
    error = np.abs(got - ref) / np.abs(ref).max()
    assert error.mean() < 0.02 and error.max() < 0.1 and not np.allclose(got, ref)


def test_keep_float_leaves_the_named_nodes_in_float(tmp_path: Path) -> None:
    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(_dense_block(), str(src))
    info = quantize_stage(src, dst, "static", _inputs(64, 2), keep_float=["dw"])
    assert info["nodes_kept_float"] == 1 and info["keep_float"] == ["dw"]
    graph = onnx.load(str(dst)).graph
    weights = {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    (dw,) = (n for n in graph.node if n.name == "dw")
    assert dw.input[1] in weights  # its weight is the float initializer, not a dequantised int8 one
    (pw,) = (n for n in graph.node if n.name == "pw")
    assert pw.input[1] not in weights
    with pytest.raises(ValueError, match="no node name"):
        quantize_stage(src, tmp_path / "x.onnx", "static", _inputs(8, 2), keep_float=["nothing"])
