"""ONNX Runtime INT8 quantisation of a model version for CPU serving (no torch import).

Static mode (default): QDQ format, int8 per-channel weights and int8 activations, calibrated
(min-max) on synthetic face crops of each stage: stage-1 crops from the tight landmark box,
stage-2 crops re-aligned on the float model's own stage-1 predictions, i.e. what each stage sees
when served. Dynamic mode: int8 weights, activations quantised on the fly (no calibration).

:func:`quantize_version` writes the quantised stages as a new model version (name + suffix,
same version string) and measures what it costs and what it buys: the cascade NME on the
synthetic validation set before and after, and the per-stage and cascade throughput of both
graphs on this CPU (one intra-op thread, median of repeated interleaved runs).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model_store.manifest import Manifest, StageSpec, sha256_file
from model_store.schemes import get_scheme
from model_store.store import ModelStore, ModelVersion
from train.data.types import Sample
from train.export.evaluate import (
    TEACHER_LABELS,
    StageGeometry,
    cascade_predict,
    evaluate_cascade,
    load_synthetic,
    stage_inputs,
)
from train.export.parity import onnx_runtime_session, run_onnx, stage_runner
from train.export.quantize_graph import activation_type, depthwise_convs, split_shared_activation_inputs

__all__ = [
    "CALIBRATION_SEED",
    "CropCalibrationReader",
    "calibration_inputs",
    "decompress_weights_fp16",
    "load_real",
    "measure_speed",
    "quantize_stage",
    "quantize_version",
    "refusal_reason",
    "relative_change",
]

CALIBRATION_SEED = 20180618  # disjoint from the training (1) and validation (2) seeds of the configs


def decompress_weights_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Undo float16 weight storage: every ``Cast(to=FLOAT)`` of a float16 initializer becomes a
    float32 initializer again (the quantiser needs weights as plain float initializers)."""
    from onnx import TensorProto, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    keep_nodes = []
    replaced: dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        src = node.input[0] if node.op_type == "Cast" and node.input else ""
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if src in inits and inits[src].data_type == TensorProto.FLOAT16 and to == TensorProto.FLOAT:
            array = numpy_helper.to_array(inits[src]).astype(np.float32)
            replaced[src] = numpy_helper.from_array(array, name=node.output[0])
        else:
            keep_nodes.append(node)
    if not replaced:
        return out
    new_inits = [replaced.get(i.name, i) for i in graph.initializer]
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.node[:]
    graph.node.extend(keep_nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


class CropCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a ``[N, 3, S, S]`` array in batches."""

    def __init__(self, inputs: np.ndarray, input_name: str = "input", batch_size: int = 32) -> None:
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self._iter: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.inputs), self.batch_size):
            yield {self.input_name: self.inputs[i : i + self.batch_size]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._batches()


def quantize_stage(
    src: Path,
    dst: Path,
    mode: str = "static",
    calibration: np.ndarray | None = None,
    per_channel: bool = True,
    activations: str = "auto",
    keep_float: Sequence[str] = (),
) -> dict[str, Any]:
    """Quantise one stage graph ``src`` -> ``dst`` (``mode`` "static" needs ``calibration`` inputs).

    Static mode: the activations' type per ``activations`` (:func:`quantize_graph.activation_type`;
    "auto": uint8 for depthwise networks, int8 otherwise), and every Relu given an input of its own
    first (:func:`quantize_graph.split_shared_activation_inputs`); nodes whose name contains one of
    ``keep_float`` stay float. Returns what was chosen and why.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    info: dict[str, Any] = {"mode": mode}
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "float.onnx"
        graph = decompress_weights_fp16(onnx.load(str(src)))
        if mode == "dynamic":
            onnx.save(graph, str(plain))
            quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
        elif mode == "static":
            if calibration is None or not len(calibration):
                raise ValueError("static quantisation needs calibration inputs")
            act, why = activation_type(graph, activations)
            graph, n_split = split_shared_activation_inputs(graph)
            kept = [n.name for n in graph.graph.node if any(k in n.name for k in keep_float)]
            if keep_float and not kept:
                raise ValueError(f"no node name contains any of {list(keep_float)}")
            info.update(
                activations=act,
                activations_reason=why,
                depthwise_convs=len(depthwise_convs(graph)),
                activation_inputs_split=n_split,
                keep_float=list(keep_float),
                nodes_kept_float=len(kept),
            )
            onnx.save(graph, str(plain))
            input_name = graph.graph.input[0].name

            class _Reader(CropCalibrationReader, CalibrationDataReader):
                pass

            quantize_static(
                str(plain),
                str(dst),
                _Reader(calibration, input_name),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8 if act == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=kept,
            )
        else:
            raise ValueError(f"mode must be static or dynamic, got {mode!r}")
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    return info


def calibration_inputs(
    run_stage: Callable[[int, np.ndarray], np.ndarray],
    stages: Sequence[StageGeometry],
    samples: Sequence[Sample],
    scheme_name: str,
) -> list[np.ndarray]:
    """Per stage, the network inputs ``[N, 3, S, S]`` the stage sees when the float model is served."""
    scheme = get_scheme(scheme_name)
    images = [s.image for s in samples]
    gt = np.stack([s.points for s in samples]).astype(np.float64)
    from model_store.geometry import tight_box

    boxes = tight_box(gt)
    preds = cascade_predict(run_stage, stages, images, boxes, scheme)
    out = []
    for i, geometry in enumerate(stages):
        x, _ = stage_inputs(images, i, geometry, scheme, boxes=boxes, previous=preds[i - 1] if i else None)
        out.append(x)
    return out


def measure_speed(
    paths: Sequence[Path],
    input_size: int,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 30,
    seed: int = 0,
    inputs: np.ndarray | None = None,
) -> list[dict[int, float]]:
    """Median seconds per call of each ONNX graph in ``paths`` (1 intra-op thread) per batch size.

    The graphs run interleaved (one call of each in turn), so a change in the machine's load during
    the measurement affects them alike. Each call gets random input, or the first n rows of ``inputs``
    ``[M, 3, S, S]`` (M >= the largest batch size; e.g. real crops, for a graph whose work depends on them).
    """
    sessions = [onnx_runtime_session(p, threads=1) for p in paths]
    rng = np.random.default_rng(seed)
    result: list[dict[int, float]] = [{} for _ in paths]
    for n in batch_sizes:
        if inputs is not None:
            x = np.ascontiguousarray(inputs[:n], dtype=np.float32)
            if len(x) < n:
                raise ValueError(f"{len(inputs)} inputs for batch size {n}")
        else:
            x = rng.normal(size=(n, 3, input_size, input_size)).astype(np.float32)
        for session in sessions:
            for _ in range(2):
                run_onnx(session, x)
        times: list[list[float]] = [[] for _ in paths]
        for _ in range(repeats):
            for i, session in enumerate(sessions):
                t0 = time.perf_counter()
                run_onnx(session, x)
                times[i].append(time.perf_counter() - t0)
        for i in range(len(paths)):
            result[i][n] = float(np.median(times[i]))
    return result


def load_real(root: Path, split: str, scheme: str, limit: int | None = None) -> list[Sample]:
    """The kept real faces of ``split`` (``train.data.real.RealFaces``; teacher labels), as ``scheme``
    samples: ``aflw19`` points are the 68 points' groups (``model_store.meanshape.aflw19_from_68``),
    boxed by their tight box, as training and the model's ``real_test`` evaluation make them.
    ``limit`` keeps an evenly spaced subset."""
    import dataclasses

    from model_store.geometry import tight_box
    from model_store.meanshape import aflw19_from_68
    from train.data.real import RealFaces

    faces = RealFaces(root, split)
    if len(faces) == 0:
        raise ValueError(f"no kept real faces in split {split!r} under {root}")
    index = range(len(faces))
    if limit is not None and limit < len(faces):
        index = range(0, len(faces), -(-len(faces) // limit))
    samples = [faces[i] for i in index]
    if scheme == "aflw19":
        out = []
        for s in samples:
            points = aflw19_from_68(s.points).astype(np.float32)
            box = tight_box(points).astype(np.float32)
            out.append(dataclasses.replace(s, points=points, box=box, scheme="aflw19"))
        return out
    if scheme != "ibug68":
        raise ValueError(f"real faces carry ibug68 labels (or aflw19 from them), not {scheme!r}")
    return samples


def refusal_reason(worst: float, limit: float, units: Sequence[str]) -> str:
    """Why an int8 cascade is not published: its worst relative NME change past ``limit``, and, where the
    CPU that measured it has no int8 dot-product unit (``units`` empty), that its int8 kernels saturate."""
    from runtime.precision import INT8_FLAGS

    why = f"int8 NME is {worst:+.1%} relative to float on one set; the limit is {limit:.0%}"
    if not units:
        why += (
            f"; this CPU has no int8 dot-product unit ({', '.join(INT8_FLAGS)}), where ONNX Runtime's "
            "int8 convolutions saturate: measure on a CPU with one, where the variant would be served"
        )
    return why


def relative_change(before: float, after: float) -> float:
    """``(after - before) / before``: the relative NME change (positive: int8 is worse)."""
    return (after - before) / before if before else float("inf") if after > before else 0.0


def quantize_version(
    model: ModelVersion,
    out_store: ModelStore,
    *,
    mode: str = "static",
    suffix: str = "-int8",
    calibration_samples: int = 256,
    eval_samples: int | None = None,
    real_root: Path | None = None,
    real_calibration_samples: int = 128,
    max_relative_loss: float | None = 0.03,
    batch_sizes: Sequence[int] = (1, 32),
    repeats: int = 30,
    overwrite: bool = False,
    activations: str = "auto",
    keep_float: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> tuple[ModelVersion | None, dict[str, Any]]:
    """Quantise every stage of ``model``, evaluate and time float vs int8, publish ``name+suffix``.

    Calibration: ``calibration_samples`` synthetic faces (seed :data:`CALIBRATION_SEED`) plus, with
    ``real_root`` (the real-face cache), ``real_calibration_samples`` faces of its train split.
    Evaluation, float and int8 on the same faces: the model's synthetic validation set, its
    synthetic test set (the manifest's ``evaluation.test.dataset``, where it has one) and the real
    held-out faces (``real_root``'s test split). With ``max_relative_loss``, an int8 cascade whose
    NME is worse than the float one's by more than that fraction on any set is not published
    (the report says so and the returned version is None). ``activations``: the static graphs'
    activation type, "auto" (per graph: :func:`train.export.quantize_graph.activation_type`),
    "int8" or "uint8"; ``keep_float``: substrings of node names left in float (e.g. a first block);
    the report and the variant's manifest record both per stage.
    """
    manifest = model.manifest
    scheme = manifest.scheme
    from train.export.flip import is_flip_averaged
    from train.export.gate import is_gated

    if is_flip_averaged(manifest):
        int8_source = str(manifest.provenance.config["source"]).replace("@", "-int8@")
        raise ValueError(
            f"{manifest.name}/{manifest.version} is flip-averaged: quantize its source and average that "
            f"int8 variant instead (wingmark flip {int8_source} --float {manifest.name}@{manifest.version} "
            "...; docs/models.md)"
        )
    if is_gated(manifest):
        raise ValueError(
            f"{manifest.name}/{manifest.version} is pose-gated: gate its frontal model's int8 variant "
            f"instead (wingmark gate --frontal NAME-int8@VERSION --float {manifest.name}@{manifest.version} "
            f"--heads-from {manifest.name}@{manifest.version}; docs/models.md)"
        )
    geometries = [StageGeometry.from_spec(s) for s in manifest.stages]
    val_spec: Mapping[str, Any] = manifest.provenance.data.get("val") or {
        "kind": "synthetic",
        "num": 200,
        "seed": 2,
    }
    if val_spec.get("kind") != "synthetic":
        raise ValueError(
            "quantisation is calibrated and evaluated on synthetic data; the model's val set is not"
        )
    eval_spec = dict(val_spec)
    if eval_samples:
        eval_spec["limit"] = eval_samples
    calib_spec = {**dict(val_spec), "num": calibration_samples, "seed": CALIBRATION_SEED}
    calib_spec.pop("limit", None)
    calib_spec.pop("cache_dir", None)  # rendered once, never cached beside the evaluation sets
    float_paths = [model.path / s.file for s in manifest.stages]

    log(
        f"quantise {manifest.name}/{manifest.version} ({mode}): "
        f"rendering {calibration_samples} calibration faces"
    )
    calib = load_synthetic(calib_spec, scheme)
    real_calib: list[Sample] = []
    if real_root is not None and mode == "static" and real_calibration_samples > 0:
        real_calib = load_real(real_root, "train", scheme, real_calibration_samples)
        log(f"  + {len(real_calib)} real calibration faces (train split of {real_root})")
    inputs: list[np.ndarray] = []
    if mode == "static":
        float_runner = stage_runner(float_paths, threads=1)
        inputs = calibration_inputs(float_runner, geometries, calib, scheme)
        if real_calib:
            real_inputs = calibration_inputs(float_runner, geometries, real_calib, scheme)
            inputs = [np.concatenate([a, b]) for a, b in zip(inputs, real_inputs, strict=True)]

    work = Path(tempfile.mkdtemp(prefix="wingmark-quant-"))
    q_paths, graphs = [], []
    for i, spec in enumerate(manifest.stages):
        dst = work / spec.file.replace(".onnx", ".int8.onnx")
        graphs.append(
            {
                "stage": i + 1,
                **quantize_stage(
                    float_paths[i],
                    dst,
                    mode,
                    inputs[i] if inputs else None,
                    activations=activations,
                    keep_float=keep_float,
                ),
            }
        )
        q_paths.append(dst)
        log(
            f"  stage {i + 1}: {float_paths[i].stat().st_size / 1e6:.1f} MB -> "
            f"{dst.stat().st_size / 1e6:.1f} MB ({graphs[-1].get('activations_reason', mode)})"
        )

    # the evaluation sets: float and int8 on the same faces
    sets: dict[str, tuple[dict[str, Any], list[Sample]]] = {
        "val": (eval_spec, load_synthetic(eval_spec, scheme))
    }
    test_block = manifest.evaluation.get("test")
    if isinstance(test_block, dict) and isinstance(test_block.get("dataset"), dict):
        test_spec = dict(test_block["dataset"])
        if test_spec.get("kind") == "synthetic":
            if eval_samples:
                test_spec["limit"] = eval_samples
            sets["test"] = (test_spec, load_synthetic(test_spec, scheme))
    if real_root is not None:
        real_spec = {"kind": "real", "root": str(real_root), "split": "test"}
        sets["real_test"] = (real_spec, load_real(real_root, "test", scheme))
    run_float, run_int8 = stage_runner(float_paths, threads=1), stage_runner(q_paths, threads=1)
    evaluations: dict[str, Any] = {}
    for set_name, (set_spec, samples) in sets.items():
        log(f"  evaluating float and int8 cascades on {len(samples)} {set_name} faces")
        f_eval = evaluate_cascade(run_float, geometries, samples, scheme)
        q_eval = evaluate_cascade(run_int8, geometries, samples, scheme)
        evaluations[set_name] = {
            "dataset": set_spec,
            "n": len(samples),
            "nme_float": f_eval["final"]["nme"],
            "nme_int8": q_eval["final"]["nme"],
            "nme_change": q_eval["final"]["nme"] - f_eval["final"]["nme"],
            "relative_change": relative_change(f_eval["final"]["nme"], q_eval["final"]["nme"]),
            "float": f_eval,
            "int8": q_eval,
        }
        if set_spec.get("kind") == "real":
            evaluations[set_name]["labels"] = TEACHER_LABELS
    float_eval, int8_eval = evaluations["val"]["float"], evaluations["val"]["int8"]

    speed: dict[str, Any] = {"threads": 1, "batch_sizes": list(batch_sizes), "stages": []}
    cascade_f = dict.fromkeys(batch_sizes, 0.0)
    cascade_q = dict.fromkeys(batch_sizes, 0.0)
    for i, geometry in enumerate(geometries):
        tf, tq = measure_speed([float_paths[i], q_paths[i]], geometry.input_size, batch_sizes, repeats)
        speed["stages"].append(
            {
                "stage": i + 1,
                "float_ms": {n: round(tf[n] * 1e3, 3) for n in batch_sizes},
                "int8_ms": {n: round(tq[n] * 1e3, 3) for n in batch_sizes},
                "speedup": {n: round(tf[n] / tq[n], 3) for n in batch_sizes},
            }
        )
        for n in batch_sizes:
            cascade_f[n] += tf[n]
            cascade_q[n] += tq[n]
    speed["cascade_faces_per_s"] = {
        n: {"float": round(n / cascade_f[n], 1), "int8": round(n / cascade_q[n], 1)} for n in batch_sizes
    }
    speed["cascade_speedup"] = {n: round(cascade_f[n] / cascade_q[n], 3) for n in batch_sizes}

    from runtime.precision import cpu_flags, int8_units

    flags = cpu_flags()
    evals = evaluations
    worst = max(e["relative_change"] for e in evaluations.values())
    report: dict[str, Any] = {
        "source": f"{manifest.name}/{manifest.version}",
        "mode": mode,
        "format": _format(mode, graphs),
        "graphs": graphs,
        "calibration": {
            "synthetic": {**calib_spec, "n": len(calib)},
            "real": {"root": str(real_root), "split": "train", "n": len(real_calib)} if real_calib else None,
        }
        if mode == "static"
        else None,
        "evaluation_data": eval_spec,
        "n": evaluations["val"]["n"],
        "nme_float": float_eval["final"]["nme"],
        "nme_int8": int8_eval["final"]["nme"],
        "nme_change": int8_eval["final"]["nme"] - float_eval["final"]["nme"],
        "sets": {k: {x: y for x, y in v.items() if x not in {"float", "int8"}} for k, v in evals.items()},
        "worst_relative_change": worst,
        "max_relative_loss": max_relative_loss,
        "float": float_eval,
        "int8": int8_eval,
        "sizes_bytes": {
            "float": sum(p.stat().st_size for p in float_paths),
            "int8": sum(p.stat().st_size for p in q_paths),
        },
        "speed": speed,
        "cpu": {"flags_int8": int8_units(flags), "model": _cpu_model()},
    }
    log(
        "  NME float -> int8: "
        + "; ".join(
            f"{k} {e['nme_float']:.4f} -> {e['nme_int8']:.4f} ({e['relative_change']:+.1%})"
            for k, e in evaluations.items()
        )
        + f"; cascade speed-up {speed['cascade_speedup']}"
    )
    if max_relative_loss is not None and worst > max_relative_loss:
        for q in q_paths:
            q.unlink(missing_ok=True)
        report["published"] = None
        report["refused"] = refusal_reason(worst, max_relative_loss, int8_units(flags))
        log(f"  not published: {report['refused']}")
        return None, report

    stages = [
        StageSpec(**{**s.model_dump(), "file": q.name, "sha256": sha256_file(q), "checkpoint": None})
        for s, q in zip(manifest.stages, q_paths, strict=True)
    ]
    set_evals = {
        k: {"dataset": e["dataset"], **e["int8"], **({"labels": e["labels"]} if "labels" in e else {})}
        for k, e in evaluations.items()
        if k != "val"
    }
    test_eval = set_evals.pop("test", None)
    quant_manifest = Manifest(
        **{
            **manifest.model_dump(),
            "name": manifest.name + suffix,
            "stages": [s.model_dump() for s in stages],
            "evaluation": {
                **{k: v for k, v in manifest.evaluation.items() if k.startswith("box_calibration")},
                **int8_eval,
                "dataset": eval_spec,
                **({"test": test_eval} if test_eval else {}),
                "sets": set_evals,
                "quantization": {k: v for k, v in report.items() if k not in {"float", "int8"}},
            },
            "description": (
                f"{manifest.description}; ONNX Runtime INT8 ({mode}) of {manifest.name}/{manifest.version}"
            ),
        }
    )
    published = out_store.publish(quant_manifest, {q.name: q for q in q_paths}, overwrite=overwrite)
    for q in q_paths:
        q.unlink(missing_ok=True)
    report["published"] = str(published.path)
    json.dumps(report, default=str)  # must be serialisable
    return published, report


def _format(mode: str, graphs: Sequence[Mapping[str, Any]]) -> str:
    """One line saying how the stages were quantised (static: activations per stage where they differ)."""
    if mode != "static":
        return "dynamic: int8 weights, activations quantised per batch"
    kinds = sorted({g["activations"] for g in graphs})
    names = {"int8": "int8 activations (S8S8)", "uint8": "uint8 activations (U8S8)"}
    split = sum(g["activation_inputs_split"] for g in graphs)
    kept = sum(g.get("nodes_kept_float", 0) for g in graphs)
    return (
        f"QDQ, int8 per-channel weights, {' / '.join(names[k] for k in kinds)}, min-max calibration"
        + (f"; {split} nodes duplicated so every Relu has its own input" if split else "")
        + (f"; {kept} nodes kept in float ({', '.join(graphs[0]['keep_float'])})" if kept else "")
    )


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"
