"""PyTorch stage -> ONNX: batch norm folded, dynamic batch axis, checked, simplified, parity-tested.

The exported graph has one input ``input`` ``[N, 3, S, S]`` float32 (NCHW, normalised as the
manifest says) and one output ``output`` ``[N, 2K]`` float32 in crop units (see
model_store.preprocess). ``N`` is a symbolic dimension named ``batch``.

Batch norm is folded into the preceding convolution (or linear layer) by graph surgery with
``torch.fx`` before export, so the graph the exporter sees has no batch norm at all; if a model
cannot be traced, the TorchScript exporter's constant folding in eval mode and onnxslim are relied
on instead. Either way :func:`export_onnx` refuses to write a graph that still holds a
``BatchNormalization`` node.

The TorchScript exporter (``dynamo=False``) is used: the dynamo exporter needs ``onnxscript``, which
the training extra does not install.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxslim
import torch
from torch import nn

from train.export.parity import ParityError, ParityReport, compare_outputs, onnx_runtime_session, run_onnx

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxExportError",
    "ParityError",
    "ParityReport",
    "check_parity",
    "compare_outputs",
    "compress_weights_fp16",
    "count_ops",
    "export_onnx",
    "fold_batchnorm",
    "onnx_runtime_session",
    "read_stage_weights",
    "run_onnx",
    "split_member",
]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"
DEFAULT_OPSET = 17


class OnnxExportError(RuntimeError):
    """The exported graph failed a structural check (batch norm left, static batch, checker)."""


# --------------------------------------------------------------------------------------------
# Batch-norm folding
# --------------------------------------------------------------------------------------------


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale, shift`` with ``bn(x) == x * scale + shift`` in eval mode, each ``[C]``."""
    assert bn.running_mean is not None and bn.running_var is not None
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d equal to ``bn(conv(x))`` in eval mode."""
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(conv)
    weight = conv.weight.detach().double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype))
    fused.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype))
    return fused


def _fuse_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A new Linear equal to ``bn(linear(x))`` in eval mode (``x`` is ``[N, in]``)."""
    scale, shift = _bn_scale_shift(bn)
    fused = copy.deepcopy(linear)
    weight = linear.weight.detach().double() * scale.reshape(-1, 1)
    bias = linear.bias.detach().double() if linear.bias is not None else torch.zeros_like(scale)
    fused.weight = nn.Parameter(weight.to(linear.weight.dtype))
    fused.bias = nn.Parameter((bias * scale + shift).to(linear.weight.dtype))
    return fused


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with every Conv2d->BatchNorm2d and Linear->BatchNorm1d
    pair folded into one layer.

    Works on the ``torch.fx`` graph, so it finds pairs however the model nests its modules. A pair is
    folded only when the batch norm's sole input is the conv/linear output and that output has no
    other user. Models that ``torch.fx`` cannot trace are returned unchanged (in eval mode).
    """
    model = copy.deepcopy(model).eval()
    try:
        graph_module = torch.fx.symbolic_trace(model)
    except Exception as exc:  # pragma: no cover - depends on the model's Python control flow
        warnings.warn(f"fold_batchnorm: torch.fx could not trace the model ({exc}); not folded", stacklevel=2)
        return model
    modules = dict(graph_module.named_modules())
    folded = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1:
            continue
        producer = node.args[0]
        if not isinstance(producer, torch.fx.Node) or producer.op != "call_module":
            continue
        if len(producer.users) != 1:
            continue
        bn, layer = modules[str(node.target)], modules[str(producer.target)]
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        fused: nn.Module
        if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fused = _fuse_conv_bn(layer, bn)
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = _fuse_linear_bn(layer, bn)
        else:
            continue
        _set_submodule(graph_module, str(producer.target), fused)
        modules[str(producer.target)] = fused
        node.replace_all_uses_with(producer)
        graph_module.graph.erase_node(node)
        folded += 1
    if folded:
        graph_module.graph.lint()
        graph_module.delete_all_unused_submodules()
        graph_module.recompile()
    return graph_module.eval()


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Number of nodes per op type in the main graph."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _check_graph(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    ops = count_ops(model)
    if ops.get("BatchNormalization", 0):
        raise OnnxExportError(f"{ops['BatchNormalization']} BatchNormalization node(s) left after folding")
    for value in (*model.graph.input, *model.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if not first.dim_param:
            raise OnnxExportError(f"{value.name}: batch axis is static ({first.dim_value}), expected dynamic")


def export_onnx(
    model: nn.Module,
    path: Path,
    input_size: int,
    *,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
    simplify: bool = True,
    fp16_weights: bool = False,
) -> onnx.ModelProto:
    """Export one stage to ``path`` and return the written graph.

        ``model`` maps ``[N, 3, S, S]`` to ``[N, 2K]``; ``input_size`` is ``S``. The model is copied,
        put in eval mode and batch-norm folded; ``model`` itself is not changed. The graph is checked
        with ``onnx.checker`` (full check) before and after onnxslim, must have a dynamic batch axis and
        no BatchNormalization node. ``metadata`` goes into the ONNX ``metadata_props``. With
    ``fp16_weights`` the weights are stored as float16 (see :func:`compress_weights_fp16`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folded = fold_batchnorm(model)
    dummy = torch.zeros(2, 3, input_size, input_size, dtype=torch.float32)
    tmp = path.with_name(path.name + ".raw.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            folded,
            (dummy,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            opset_version=opset,
            do_constant_folding=True,
        )
    try:
        exported = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    onnx.checker.check_model(exported, full_check=True)
    result = onnxslim.slim(exported) if simplify else exported
    assert isinstance(result, onnx.ModelProto)
    del result.metadata_props[:]
    for key, value in sorted((metadata or {}).items()):
        entry = result.metadata_props.add()
        entry.key, entry.value = key, str(value)
    _check_graph(result)
    if fp16_weights:
        result = compress_weights_fp16(result)
    onnx.save(result, str(path))
    return result


def compress_weights_fp16(model: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """Store large float32 initializers as float16, each followed by a ``Cast`` back to float32.

    Halves the file size; computation stays float32 (ONNX Runtime and TensorRT fold the casts into
    float32 constants when they load the graph). Only the rounding of the weights to float16 changes
    the output; measure it with :func:`check_parity`. Returns a new, checked model.
    """
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts = []
    kept = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or array.size < min_elements:
            kept.append(init)
            continue
        if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
            raise OnnxExportError(f"initializer {init.name} overflows float16")
        half = numpy_helper.from_array(array.astype(np.float16), name=f"{init.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])
    onnx.checker.check_model(out, full_check=True)
    return out


def split_member(path: str | Path) -> tuple[Path, str | None]:
    """``"stage1.gated.onnx#turned"`` -> (the file, ``"turned"``); a plain path -> (it, None)."""
    file, sep, member = str(path).partition("#")
    if sep and not member:
        raise ValueError(f"{path}: empty member name after '#'")
    return Path(file), (member or None)


def read_stage_weights(path: str | Path) -> dict[str, np.ndarray]:
    """A published stage's initialisers by their PyTorch names, as float32: the inverse of
    :func:`compress_weights_fp16` (``NAME__fp16`` float16 tensors widened back to ``NAME``).

    ``FILE.onnx#MEMBER`` reads one network of a graph that holds several under ``MEMBER/`` name
    prefixes (a pose-gated stage: ``#frontal`` or ``#turned``), so a run can start from a published
    specialist whose training checkpoint is gone."""
    from onnx import numpy_helper

    file, member = split_member(path)
    out = {
        init.name.removesuffix("__fp16"): numpy_helper.to_array(init).astype(np.float32)
        for init in onnx.load(str(file)).graph.initializer
    }
    if member is None:
        return out
    prefix = f"{member}/"
    picked = {name.removeprefix(prefix): a for name, a in out.items() if name.startswith(prefix)}
    if not picked:
        members = sorted({name.split("/", 1)[0] for name in out if "/" in name})
        raise ValueError(f"{file}: no network {member!r} in it (members: {', '.join(members) or 'none'})")
    return picked


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


def check_parity(
    model: nn.Module, onnx_path: Path, batch: np.ndarray, tolerance: float = 1e-4
) -> ParityReport:
    """Run the original PyTorch ``model`` (eval mode, unfolded) and the ONNX file on the same
    ``[N, 3, S, S]`` batch; raise :class:`ParityError` above ``tolerance`` (crop units)."""
    reference_model = copy.deepcopy(model).eval()
    with torch.no_grad():
        expected = reference_model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()
    got = run_onnx(onnx_runtime_session(onnx_path), batch)
    return compare_outputs(expected, got, tolerance, names=("pytorch", "onnxruntime"))
