"""Flip averaging inside a stage graph: each crop and its mirror image through the same network.

A stage's network maps a face crop to its points; the mirrored crop shows the mirrored face, whose points,
mirrored back (x -> 1 - x in crop units, left and right points swapped by the scheme's flip permutation),
are a second estimate of the same points, with errors partly independent of the first: their mean is a
two-view ensemble (a sideways offset common to all faces would cancel exactly, but on faceapi-ibug68 4.4.0
the two disagree by about 0.8 px of the 112-px crop per coordinate and face, of which about 0.2 px is
common to all faces). Averaging the last stage took 4.4.0's real held-out photos from 3.24 to 2.93 % and
its synthetic test set from 5.65 to 5.33 %; averaging stage 1 as well added almost nothing, and four
shifted views more per crop 0.05-0.08 points at 5x the cost (docs/models.md). Built into the stage file
like the pose gate (:mod:`train.export.gate`), so the manifest, backends, batchers and the service need
nothing new: the stage stays ``input [N, 3, S, S] -> output [N, 2K]`` (crop units), row i depends only on
input row i:

    both = Concat(x, x reversed along width)            [2N, 3, S, S]
    out  = network(both)                                [2N, 2K]  (the source stage's own graph)
    a, b = Split(out) into the two halves               [N, 2K] each
    b'   = b's columns gathered by the flip permutation, x columns mapped to 1 - x
    output = (a + b') * 0.5

    wingmark flip faceapi-ibug68@4.4.0 --name faceapi-ibug68 --version 4.5.0

An int8 variant is the source's int8 variant flip-averaged the same way (``--float`` names the flip-averaged
float version it is recorded against, as ``wingmark gate --float``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store.cascade import CascadeGeometry
from model_store.manifest import Manifest, StageSpec
from model_store.schemes import get_scheme
from model_store.store import ModelStore, ModelVersion
from train.export.gate import (
    compare_speed,
    evaluation_layout,
    evaluation_specs,
    int8_variant_record,
    prefixed_graph,
    publish_derived,
    real_set,
    stage_model,
    stage_spec,
)
from train.export.parity import compare_outputs, stage_runner

__all__ = [
    "FLIP_KIND",
    "cost_record",
    "flip_average_outputs",
    "flip_averaged_graph",
    "flip_columns",
    "flip_version",
    "is_flip_averaged",
    "underlying_version",
]

FLIP_KIND = "flip_average"  # provenance.config["kind"] of a flip-averaged version


def flip_columns(flip_permutation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mirror of a ``[N, 2K]`` crop-unit output, as column operations: ``out[:, index] * scale +
    offset`` (point i of the mirrored face is point ``perm[i]``, its x is ``1 - x``) -> index ``[2K]``
    int64, scale and offset ``[2K]`` float32."""
    perm = np.asarray(flip_permutation, dtype=np.int64)
    index = np.stack([2 * perm, 2 * perm + 1], axis=1).reshape(-1)
    scale = np.tile(np.array([-1.0, 1.0], dtype=np.float32), len(perm))
    offset = np.tile(np.array([1.0, 0.0], dtype=np.float32), len(perm))
    return index, scale, offset


def flip_average_outputs(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, flip_permutation: np.ndarray
) -> np.ndarray:
    """The flip-averaged stage computed outside the graph: ``run`` ``[N, 3, S, S] -> [N, 2K]`` on ``x`` and
    on ``x`` mirrored, the second mapped back (:func:`flip_columns`), the mean in float32."""
    index, scale, offset = flip_columns(flip_permutation)
    a = np.asarray(run(x), dtype=np.float32)
    b = np.asarray(run(np.ascontiguousarray(x[..., ::-1])), dtype=np.float32)
    if len(x) == 0:
        return a
    return ((a + (b[:, index] * scale + offset)) * np.float32(0.5)).astype(np.float32)


def flip_averaged_graph(
    model: onnx.ModelProto, flip_permutation: np.ndarray, metadata: Mapping[str, str] | None = None
) -> onnx.ModelProto:
    """One stage's flip-averaged graph (module docstring): same input and output as ``model``'s."""
    if len(model.graph.output) != 1:
        raise ValueError("a flip-averaged stage needs a single-output graph")
    (inp,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = inp.type.tensor_type.shape.dim
    if len(dims) != 4 or not dims[3].HasField("dim_value"):
        raise ValueError(f"expected a stage input [N, 3, S, S] with a fixed width, got {dims}")
    width = int(dims[3].dim_value)
    out = model.graph.output[0]
    net = prefixed_graph(model, "net/", "flip/both")
    index, scale, offset = flip_columns(flip_permutation)

    def const(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(value, name)

    inits = [
        const("flip/width_index", np.arange(width - 1, -1, -1, dtype=np.int64)),  # Gather: portable mirror
        const("flip/columns", index),
        const("flip/scale", scale),
        const("flip/offset", offset),
        const("flip/half", np.array(0.5, dtype=np.float32)),
    ]
    opset = max((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), default=0)
    halves: dict[str, Any] = {"num_outputs": 2} if opset >= 18 else {}  # equal halves: opset 18 wants it
    n = helper.make_node
    nodes = [
        n("Gather", [inp.name, "flip/width_index"], ["flip/mirrored"], name="flip/mirror", axis=3),
        n("Concat", [inp.name, "flip/mirrored"], ["flip/both"], name="flip/concat", axis=0),
        *net.node,
        n("Split", [net.output[0].name], ["flip/a", "flip/b"], name="flip/split", axis=0, **halves),
        n("Gather", ["flip/b", "flip/columns"], ["flip/b_perm"], name="flip/permute", axis=1),
        n("Mul", ["flip/b_perm", "flip/scale"], ["flip/b_scaled"], name="flip/negate_x"),
        n("Add", ["flip/b_scaled", "flip/offset"], ["flip/b_back"], name="flip/unmirror"),
        n("Add", ["flip/a", "flip/b_back"], ["flip/sum"], name="flip/sum"),
        n("Mul", ["flip/sum", "flip/half"], [out.name], name="flip/mean"),
    ]
    graph = helper.make_graph(
        nodes, "flip_averaged_stage", [inp], [out], initializer=[*net.initializer, *inits]
    )
    return stage_model(graph, [model], metadata)


def is_flip_averaged(manifest: Manifest) -> bool:
    """Whether a version's stages were flip-averaged here."""
    return manifest.provenance.config.get("kind") == FLIP_KIND


def underlying_version(model: ModelVersion, store: ModelStore) -> ModelVersion:
    """The version a flip-averaged one was made from (followed through), else ``model`` itself."""
    while is_flip_averaged(model.manifest):
        model = store.resolve(*str(model.manifest.provenance.config["source"]).split("@"))
    return model


def flip_version(
    source: ModelVersion,
    name: str,
    version: str,
    store: ModelStore,
    *,
    stages: Sequence[int] | None = None,
    eval_specs: Mapping[str, Mapping[str, Any]] | None = None,
    float_version: ModelVersion | None = None,
    max_relative_loss: float = 0.03,
    description: str = "",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[ModelVersion, dict[str, Any]]:
    """Write ``name``/``version``: ``source``'s stages, those numbered in ``stages`` (1-based; default the
    last) flip-averaged; evaluate it on ``eval_specs`` (``val`` first; default: the sets of ``source``'s own
    evaluation, so the figures compare) beside ``source``, with each
    averaged stage's parity against :func:`flip_average_outputs` on the same crops (``ParityError``
    otherwise); record the cost per stage; publish into ``store``. -> version and report.

    ``float_version``: the flip-averaged float version this one is the int8 variant of (``source`` is then
    an int8 variant); the manifest gets the record an int8 variant carries (:func:`int8_variant_record`)."""

    sm = source.manifest
    count = len(sm.stages)
    chosen = sorted(set(stages)) if stages else [count]
    if not chosen or chosen[0] < 1 or chosen[-1] > count:
        raise ValueError(f"stages {list(stages or [])} out of 1..{count}")
    if is_flip_averaged(sm):
        raise ValueError(f"{sm.name}/{sm.version} is already flip-averaged; flip its source instead")
    perm = get_scheme(sm.scheme).flip_permutation
    source_ref = f"{sm.name}@{sm.version}"
    config = {
        "kind": FLIP_KIND,
        "source": source_ref,
        "stages": chosen,
        "source_provenance": {"config": sm.provenance.config, "config_sha256": sm.provenance.config_sha256},
    }
    with tempfile.TemporaryDirectory(prefix="wingmark-flip-") as tmp:
        files: dict[str, Path] = {}
        specs: list[StageSpec] = []
        for i, st in enumerate(sm.stages, start=1):
            path = source.path / st.file
            if i in chosen:
                meta = {
                    "wingmark.model": name,
                    "wingmark.version": version,
                    "wingmark.flip": json.dumps({"source": source_ref, "stage": i}),
                }
                graph = flip_averaged_graph(onnx.load(str(path)), perm, meta)
                path = Path(tmp) / st.file.replace(".onnx", ".flip.onnx")
                onnx.save(graph, str(path))
            files[path.name] = path
            specs.append(stage_spec(st, path))
        paths = list(files.values())
        evaluation = _evaluate(source, paths, chosen, eval_specs, log)
        cost = real_set(evaluation) or evaluation["dataset"]
        evaluation["flip_cost"] = compare_speed(source, paths, cost, log, labels=("source", "flip_averaged"))
        evaluation["cost"] = cost_record(paths, evaluation["flip_cost"], "flip_averaged")
        if float_version is not None:
            notes = {
                "int8_source": f"{sm.name}/{sm.version}",
                "flip": "the mirrored crops run through the same int8 graphs",
            }
            evaluation["quantization"] = int8_variant_record(
                float_version, source, evaluation, paths, max_relative_loss, log, notes
            )
        published = publish_derived(
            store,
            sm,
            name,
            version,
            files,
            specs,
            config,
            sm.provenance.data,
            evaluation,
            description
            or f"{sm.description}; stage {', '.join(map(str, chosen))} averaged with its mirrored crop",
            overwrite=overwrite,
            log=log,
        )
    return published, {"model": f"{name}@{version}", "path": str(published.path), **config, **evaluation}


def cost_record(paths: Sequence[Path], speed: Mapping[str, Any], label: str) -> dict[str, Any]:
    """What a version costs per face: GFLOP per stage and for the cascade, counted from the stage graphs
    (:func:`model_store.flops.count_flops`: a face a pose gate passes by; a gated face adds the turned-face
    network's work at each stage), and the cascade's faces/s at each batch size on one ONNX Runtime thread,
    ``label``'s of ``speed`` (a :func:`train.export.gate.compare_speed` record), with its inputs and CPU."""
    from model_store.flops import count_flops
    from runtime.precision import cpu_flags, int8_units
    from train.export.quantize import _cpu_model

    per_stage = {f"stage{i}": round(count_flops(p)["total"] / 1e9, 4) for i, p in enumerate(paths, start=1)}
    return {
        "gflop_per_face": {**per_stage, "cascade": round(sum(per_stage.values()), 4)},
        "flops_note": "counted from the graphs; a face the pose gate passes by (a gated face adds the turned "
        "network's work at each stage); a flip-averaged stage counts its network twice",
        "cascade_faces_per_s": {str(n): v[label] for n, v in speed["cascade_faces_per_s"].items()},
        "threads": speed["threads"],
        "inputs": speed["inputs"],
        "cpu": {"model": _cpu_model(), "flags_int8": int8_units(cpu_flags())},
    }


def _checked(
    run_flip: Callable[[int, np.ndarray], np.ndarray],
    run_source: Callable[[int, np.ndarray], np.ndarray],
    chosen: Sequence[int],
    perm: np.ndarray,
    parity: list[dict[str, Any]],
) -> Callable[[int, np.ndarray], np.ndarray]:
    """``run_flip``, each averaged stage's output checked against :func:`flip_average_outputs` of
    ``run_source`` on the same crops (within 1e-5; ``ParityError`` otherwise), appended to ``parity``."""

    def run(i: int, x: np.ndarray) -> np.ndarray:
        got = run_flip(i, x)
        if i + 1 in chosen:
            want = flip_average_outputs(lambda b: run_source(i, b), x, perm)
            names = ("numpy mean of the source graph on the crop and its mirror", "flip-averaged graph")
            parity.append({"stage": i + 1, **compare_outputs(want, got, 1e-5, names).to_dict()})
        return got

    return run


def _evaluate(
    source: ModelVersion,
    paths: Sequence[Path],
    chosen: Sequence[int],
    eval_specs: Mapping[str, Mapping[str, Any]] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The flip-averaged cascade on each set of ``source``'s evaluation beside ``source`` alone, and each
    averaged stage's parity with :func:`flip_average_outputs` of the source graph on the same crops. Keys as
    an exported version's evaluation: the validation set's summary at the top, ``test`` and ``sets``."""

    from train.dataset import load_samples
    from train.export.evaluate import evaluate_cascade, set_record
    from train.metrics import DEFAULT_THRESHOLDS

    sm = source.manifest
    specs = dict(eval_specs) if eval_specs is not None else evaluation_specs(sm.evaluation)
    geometry = CascadeGeometry.from_manifest(sm)
    perm = get_scheme(sm.scheme).flip_permutation
    run_source = stage_runner([source.path / s.file for s in sm.stages])
    run_flip = stage_runner(paths)
    results: dict[str, Any] = {}
    for key, spec in specs.items():
        samples = list(load_samples(dict(spec), sm.scheme, progress=False))
        entry = set_record(spec)
        parity: list[dict[str, Any]] = []
        check = _checked(run_flip, run_source, chosen, perm, parity)  # parity on the evaluated crops
        entry.update(
            evaluate_cascade(check, geometry.stages, samples, sm.scheme, thresholds=DEFAULT_THRESHOLDS)
        )
        entry["source_alone"] = evaluate_cascade(
            run_source, geometry.stages, samples, sm.scheme, thresholds=DEFAULT_THRESHOLDS
        )["final"]
        entry["parity"] = parity
        log(
            f"  {key}: flip-averaged {entry['final']['nme']:.4f}, {sm.name}@{sm.version} alone "
            f"{entry['source_alone']['nme']:.4f} ({len(samples)} faces; graph vs numpy "
            f"{max(p['max_abs_error'] for p in parity):.1e})"
        )
        results[key] = entry
    return evaluation_layout(results)
