"""A pose-gated model version: a near-frontal cascade and a turned-face specialist in the same stage files.

Every candidate trained for issue 18 that gains on turned faces loses a little on the mostly near-frontal
real photos (docs/models.md). :mod:`tools.studies.pose_gate` showed that choosing the cascade per face by its
head pose keeps both. This module builds that choice into the model files themselves, so the manifest,
backends, batchers, int8 variants and the service need nothing new: each stage stays one ONNX graph
``input [N, 3, S, S] -> output [N, 2K]`` (crop units). Inside it:

    frontal network on every crop -> out_f [N, 2K]
    yaw head: shape features of out_f (:func:`shape_features`) . w + b -> yaw [N] (degrees)
    the crops with |yaw| >= threshold (NonZero -> GatherND) -> turned network -> out_t [M, 2K]
    output = out_f with those M rows replaced by out_t (ScatterND)

The turned network runs on the gated crops only (none, for a near-frontal photo). The yaw head is linear in
the frontal output's centred, scale-normalised points and is fitted per stage (:func:`fit_yaw_head`) on faces
of known yaw: synthetic renders (the renderer's yaw, exact) and the real train split (yaw solved from its
teacher labels, ``model_store.pose.estimate_pose``). Both models must share the scheme and stage count.
A stage's crop is cut once, by the frontal network's geometry, from the gated points of the stage before; a
turned network of another geometry (input size, crop rule, normalisation) reads its own crop as a window of
that one, resampled inside the graph (:mod:`train.export.cross_crop`).

    wingmark gate --frontal faceapi-ibug68@4.3.0 --turned /tmp/store54:faceapi-ibug68-turned@0.2.0 \\
        --name faceapi-ibug68 --version 4.4.0 --threshold 45

The int8 variant gates the two int8 models with the float version's heads (``--heads-from``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_store.cascade import CascadeGeometry
from model_store.manifest import Manifest, Provenance, StageSpec, sha256_file
from model_store.pose import estimate_pose
from model_store.schemes import get_scheme
from model_store.store import ModelStore, ModelVersion
from runtime.cascade import Cascade
from train.data.types import Sample
from train.export.cross_crop import CropMap, crop_map, crop_map_nodes, map_output, resample
from train.export.parity import compare_outputs, stage_runner

__all__ = [
    "DEFAULT_FIT_SETS",
    "GATE_KIND",
    "YawHead",
    "compare_speed",
    "crop_maps",
    "evaluation_layout",
    "evaluation_specs",
    "fit_heads",
    "fit_yaw_head",
    "gate_data_provenance",
    "gate_stage_outputs",
    "gate_version",
    "gated_graph",
    "int8_variant_record",
    "is_gated",
    "prefixed_graph",
    "publish_derived",
    "real_set",
    "resolve_spec",
    "run_lineage",
    "shape_features",
    "simulate_gated",
    "speed_inputs",
    "stage_model",
    "stage_spec",
]

GATE_KIND = "pose_gate"  # provenance.config["kind"] of a gated version
# the yaw heads' fit faces: training data of the 68-point models, none of their validation or test sets
DEFAULT_FIT_SETS: tuple[dict[str, Any], ...] = (
    {"kind": "synthetic", "num": 4000, "seed": 11, "image_size": 256, "cache_dir": "cache/synthetic",
     "jaw": "contour", "pose": {"yaw_tail": 1.0, "yaw_max": 90.0}},
    {"kind": "synthetic", "num": 600, "seed": 4, "image_size": 256, "cache_dir": "cache/synthetic",
     "jaw": "contour"},
    {"kind": "real", "root": "cache/real", "split": "train"},
)  # fmt: skip


def resolve_spec(spec: str) -> ModelVersion:
    """``[STORE_DIR:]NAME@VERSION`` (default store: the repository's; default version: latest) -> the
    verified version."""
    root, sep, name_version = spec.rpartition(":")
    name, _, version = name_version.partition("@")
    store = ModelStore(Path(root)) if sep and root else ModelStore()
    model = store.resolve(name, version or "latest")
    store.verify(model)
    return model


def shape_features(outputs: np.ndarray) -> np.ndarray:
    """``[N, 2K]`` crop-unit points (x0, y0, x1, ...) -> ``[N, 2K]`` the same points centred on their mean
    and divided by their RMS distance from it (translation and scale of the crop drop out). A degenerate
    row (all points equal) becomes NaN, which no threshold passes."""
    o = np.asarray(outputs, dtype=np.float64)
    p = o.reshape(len(o), -1, 2)
    c = p - p.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = c / np.sqrt((c**2).sum(axis=2).mean(axis=1))[:, None, None]
    return f.reshape(len(o), -1)


@dataclass(frozen=True)
class YawHead:
    """yaw (degrees, signed) = ``shape_features(output) @ weights + bias``."""

    weights: np.ndarray  # [2K]
    bias: float

    def predict(self, outputs: np.ndarray) -> np.ndarray:
        """``[N, 2K]`` crop-unit outputs -> ``[N]`` yaw in degrees."""
        return np.asarray(shape_features(outputs) @ self.weights + self.bias, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": [float(v) for v in self.weights], "bias": float(self.bias)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> YawHead:
        return cls(np.asarray(d["weights"], dtype=np.float64), float(d["bias"]))


def fit_yaw_head(outputs: np.ndarray, yaw: np.ndarray, ridge: float = 1e-2) -> YawHead:
    """Least squares with an L2 penalty ``ridge`` on the weights (not the bias): ``outputs [N, 2K]`` crop-unit
    points of faces whose yaw is ``yaw [N]`` (degrees) -> the head predicting it from their shape."""
    x = shape_features(outputs)
    y = np.asarray(yaw, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(y) <= x.shape[1] or not np.isfinite(x).all():
        raise ValueError(f"need more finite faces than features: {x.shape} against {y.shape}")
    xb = np.column_stack([x, np.ones(len(x))])
    penalty = ridge * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0
    w = np.linalg.solve(xb.T @ xb + penalty, xb.T @ y)
    return YawHead(w[:-1], float(w[-1]))


def gate_stage_outputs(
    frontal: np.ndarray, turned: np.ndarray, head: YawHead, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """What a gated stage computes, in numpy: ``frontal``/``turned`` ``[N, 2K]`` outputs -> the gated output
    ``[N, 2K]`` and the mask ``[N]`` of rows taken from ``turned`` (|yaw| >= ``threshold``)."""
    with np.errstate(invalid="ignore"):
        mask = np.abs(head.predict(frontal)) >= threshold
    return np.where(mask[:, None], turned, frontal), mask


def prefixed_graph(model: onnx.ModelProto, prefix: str, input_name: str) -> onnx.GraphProto:
    """``model``'s graph with every node, value and initializer name prefixed, reading ``input_name``."""
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    (inp,) = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
    rename = {n.name: prefix + n.name for n in g.initializer}
    for node in g.node:
        for name in list(node.output):
            rename[name] = prefix + name
    rename[inp] = input_name
    for k, node in enumerate(g.node):
        node.name = f"{prefix}{k}/{node.name or node.op_type}"
        for i, name in enumerate(node.input):
            if name:
                node.input[i] = rename.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = rename[name]
    for t in g.initializer:
        t.name = rename[t.name]
    for vi in list(g.value_info) + list(g.output):
        vi.name = rename.get(vi.name, vi.name)
    return g


def gated_graph(
    frontal: onnx.ModelProto,
    turned: onnx.ModelProto,
    head: YawHead,
    threshold: float,
    metadata: Mapping[str, str] | None = None,
    crop: CropMap | None = None,
) -> onnx.ModelProto:
    """One stage's gated graph (module docstring): same input and output as ``frontal``'s. With ``crop``,
    the turned network reads its own window of the gated crops and its output is mapped back into the
    frontal crop's units (:mod:`train.export.cross_crop`)."""
    if len(frontal.graph.output) != 1 or len(turned.graph.output) != 1:
        raise ValueError("a gated stage needs two single-output graphs")
    (inp,) = [i for i in frontal.graph.input if i.name not in {t.name for t in frontal.graph.initializer}]
    out = frontal.graph.output[0]
    k2 = len(head.weights)
    f = prefixed_graph(frontal, "frontal/", inp.name)
    t = prefixed_graph(turned, "turned/", "gate/crops" if crop is None else "gate/turned_crops")
    out_f, out_t = f.output[0].name, t.output[0].name
    resample_nodes: list[onnx.NodeProto] = []
    map_nodes: list[onnx.NodeProto] = []
    crop_inits: list[TensorProto] = []
    if crop is not None:
        resample_nodes, map_nodes, crop_inits = crop_map_nodes(
            crop, "gate/crops", "gate/turned_crops", out_t, "gate/turned_out", k2 // 2
        )
        out_t = "gate/turned_out"

    def const(name: str, value: np.ndarray) -> TensorProto:
        return numpy_helper.from_array(value, name)

    inits = [
        const("gate/points_shape", np.array([-1, k2 // 2, 2], dtype=np.int64)),
        const("gate/flat_shape", np.array([-1, k2], dtype=np.int64)),
        const("gate/w", np.asarray(head.weights, dtype=np.float32).reshape(k2, 1)),
        const("gate/b", np.array([head.bias], dtype=np.float32)),
        const("gate/threshold", np.array([threshold], dtype=np.float32)),
        const("gate/rows", np.array([-1], dtype=np.int64)),
        const("gate/axis2", np.array([2], dtype=np.int64)),
    ]
    n = helper.make_node
    nodes = [
        n("Reshape", [out_f, "gate/points_shape"], ["gate/p"], name="gate/reshape"),
        n("ReduceMean", ["gate/p"], ["gate/mean"], name="gate/mean", axes=[1], keepdims=1),
        n("Sub", ["gate/p", "gate/mean"], ["gate/c"], name="gate/centre"),
        n("Mul", ["gate/c", "gate/c"], ["gate/c2"], name="gate/square"),
        n("ReduceSum", ["gate/c2", "gate/axis2"], ["gate/r2"], name="gate/r2", keepdims=1),
        n("ReduceMean", ["gate/r2"], ["gate/ms"], name="gate/ms", axes=[1], keepdims=1),
        n("Sqrt", ["gate/ms"], ["gate/rms"], name="gate/rms"),
        n("Div", ["gate/c", "gate/rms"], ["gate/cn"], name="gate/scale"),
        n("Reshape", ["gate/cn", "gate/flat_shape"], ["gate/features"], name="gate/features"),
        n("MatMul", ["gate/features", "gate/w"], ["gate/wx"], name="gate/matmul"),
        n("Add", ["gate/wx", "gate/b"], ["gate/yaw2d"], name="gate/bias"),
        n("Reshape", ["gate/yaw2d", "gate/rows"], ["gate/yaw"], name="gate/yaw"),
        n("Abs", ["gate/yaw"], ["gate/abs_yaw"], name="gate/abs"),
        n("GreaterOrEqual", ["gate/abs_yaw", "gate/threshold"], ["gate/mask"], name="gate/compare"),
        n("NonZero", ["gate/mask"], ["gate/nonzero"], name="gate/nonzero"),
        n("Transpose", ["gate/nonzero"], ["gate/index"], name="gate/index", perm=[1, 0]),  # [M, 1]
        n("GatherND", [inp.name, "gate/index"], ["gate/crops"], name="gate/gather"),
        *resample_nodes,
        *t.node,
        *map_nodes,
        n("ScatterND", [out_f, "gate/index", out_t], [out.name], name="gate/scatter"),
    ]
    graph = helper.make_graph(
        [*f.node, *nodes],
        "pose_gated_stage",
        [inp],
        [out],
        initializer=[*f.initializer, *t.initializer, *inits, *crop_inits],
    )
    return stage_model(graph, [frontal, turned], metadata)


def stage_model(
    graph: onnx.GraphProto, sources: Sequence[onnx.ModelProto], metadata: Mapping[str, str] | None = None
) -> onnx.ModelProto:
    """A stage graph built from the ``sources``' graphs as a checked model: their opsets (the highest version
    of each domain) and IR version, the first source's metadata updated by ``metadata``."""
    opsets: dict[str, int] = {}
    for o in (o for m in sources for o in m.opset_import):
        opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = max(m.ir_version for m in sources)
    props = {p.key: p.value for p in sources[0].metadata_props}
    props.update(metadata or {})
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model)
    return model


def is_gated(manifest: Manifest) -> bool:
    """Whether a version's stages are pose-gated graphs (made here)."""
    return manifest.provenance.config.get("kind") == GATE_KIND


def crop_maps(frontal: Manifest, turned: Manifest) -> list[CropMap | None]:
    """Check that two models can be gated; -> per stage, the turned network's crop as a window of the
    frontal one (:func:`train.export.cross_crop.crop_map`; None where the geometries are the same)."""
    if frontal.scheme != turned.scheme:
        raise ValueError(f"schemes differ: {frontal.scheme} and {turned.scheme}")
    if len(frontal.stages) != len(turned.stages):
        raise ValueError(f"stage counts differ: {len(frontal.stages)} and {len(turned.stages)}")
    for a, b in zip(frontal.stages, turned.stages, strict=True):
        if a.output != b.output:
            raise ValueError(f"{a.name}: output differs ({a.output} and {b.output})")
    from train.export.flip import is_flip_averaged  # flip builds on this module

    if is_gated(frontal) or is_gated(turned):
        raise ValueError("gate two plain cascades, not a gated version")
    if is_flip_averaged(frontal) or is_flip_averaged(turned):
        raise ValueError("gate the flip-averaged version's source, then average the gated version")
    return [
        crop_map(a, b, stage=i)
        for i, (a, b) in enumerate(zip(frontal.stages, turned.stages, strict=True), start=1)
    ]


def _fit_faces(
    specs: Sequence[Mapping[str, Any]], scheme: str, log: Callable[[str], None]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[str]]:
    """Images, tight boxes and yaw (degrees) of the fit sets; a synthetic set's yaw is its renderer's, a
    real set's is solved from its labels (same sign convention: the solve's correlation with the renders'
    is 0.99 on the seed-4 set)."""
    from model_store.geometry import tight_box
    from train.dataset import load_samples

    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    yaw: list[float] = []
    sources: list[str] = []
    for spec in specs:
        samples: list[Sample] = list(load_samples(dict(spec), scheme, progress=False))
        for s in samples:
            pts = np.asarray(s.points, dtype=np.float64)
            if "yaw" in s.meta:
                y = float(s.meta["yaw"])
            else:
                try:
                    y = estimate_pose(pts, scheme, s.image.shape[1], s.image.shape[0]).yaw
                except ValueError:
                    continue
            images.append(s.image)
            boxes.append(tight_box(pts[None])[0])
            yaw.append(y)
            sources.append(str(spec.get("kind")))
        log(f"  fit set {dict(spec)}: {len(samples)} faces")
    return images, np.stack(boxes), np.asarray(yaw), sources


def fit_heads(
    frontal: ModelVersion,
    specs: Sequence[Mapping[str, Any]],
    *,
    ridge: float = 1e-2,
    log: Callable[[str], None] = print,
) -> tuple[list[YawHead], dict[str, Any]]:
    """One yaw head per stage of ``frontal``, fitted on its own outputs for the faces of ``specs``
    (stage k's crops follow the frontal cascade's stage k-1 points). -> heads and a fit report."""
    scheme = frontal.manifest.scheme
    images, boxes, yaw, sources = _fit_faces(specs, scheme, log)
    geometry = CascadeGeometry.from_manifest(frontal.manifest)
    run = stage_runner([frontal.path / s.file for s in frontal.manifest.stages])
    heads: list[YawHead] = []
    report: dict[str, Any] = {
        "faces": len(yaw),
        "sets": [dict(s) for s in specs],
        "ridge": ridge,
        "stages": [],
    }

    def fit(i: int, x: np.ndarray) -> np.ndarray:  # stage i's crops of every face -> its output, unchanged
        out = run(i, x)
        head = fit_yaw_head(out, yaw, ridge)
        err = np.abs(head.predict(out) - yaw)
        turned = np.abs(yaw) >= 45
        report["stages"].append(
            {
                "stage": i + 1,
                "mae_deg": float(err.mean()),
                "mae_deg_abs_yaw_ge_45": float(err[turned].mean()) if turned.any() else None,
                "mae_deg_by_source": {
                    src: float(err[np.array(sources) == src].mean()) for src in sorted(set(sources))
                },
            }
        )
        log(f"  stage {i + 1} yaw head: mean abs error {err.mean():.2f} deg on its fit faces")
        heads.append(head)
        return out

    Cascade(geometry, fit).run(images, boxes)  # the one stage loop, each stage's outputs seen whole
    return heads, report


def gate_version(
    frontal: ModelVersion,
    turned: ModelVersion,
    name: str,
    version: str,
    store: ModelStore,
    *,
    threshold: float,
    heads: Sequence[YawHead],
    heads_report: Mapping[str, Any],
    eval_specs: Mapping[str, Mapping[str, Any]] | None = None,
    float_version: ModelVersion | None = None,
    max_relative_loss: float = 0.03,
    description: str = "",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[ModelVersion, dict[str, Any]]:
    """Write ``name``/``version``: ``frontal``'s stages gated with ``turned``'s by ``heads`` at
    ``threshold`` degrees; evaluate it on ``eval_specs`` (default: the sets of ``frontal``'s own evaluation,
    so the figures compare) beside both models alone; publish into ``store``. -> version and report.

    ``float_version``: the gated float version this one is the int8 variant of (``frontal`` then is an
    int8 variant, ``wingmark quantize``); the sets default to its, and the manifest gets the quantisation
    record an int8 variant carries (its NME against the float version's per set, refused past
    ``max_relative_loss``; the cascade's speed against it on the validation set's crops)."""

    fm, tm = frontal.manifest, turned.manifest
    maps = crop_maps(fm, tm)
    if len(heads) != len(fm.stages):
        raise ValueError(f"{len(heads)} yaw heads for {len(fm.stages)} stages")
    num = get_scheme(fm.scheme).num_points
    for h in heads:
        if h.weights.shape != (2 * num,):
            raise ValueError(f"a yaw head of {h.weights.shape} weights for {num} points")
    source = {"frontal": f"{fm.name}@{fm.version}", "turned": f"{tm.name}@{tm.version}"}
    config = {
        "kind": GATE_KIND,
        **source,
        "threshold_deg": threshold,
        "turned_crops": [
            "the turned network's own crop" if m is None else {"window_of_frontal_crop": m.to_dict()}
            for m in maps
        ],
        "heads": [h.to_dict() for h in heads],
        "heads_fit": dict(heads_report),
        "turned_provenance": {"config": tm.provenance.config, "config_sha256": tm.provenance.config_sha256},
    }
    with tempfile.TemporaryDirectory(prefix="wingmark-gate-") as tmp:
        files: dict[str, Path] = {}
        specs: list[StageSpec] = []
        for i, (a, b, head) in enumerate(zip(fm.stages, tm.stages, heads, strict=True)):
            meta = {
                "wingmark.model": name,
                "wingmark.version": version,
                "wingmark.gate": json.dumps({**source, "threshold_deg": threshold, "stage": i + 1}),
            }
            graph = gated_graph(
                onnx.load(str(frontal.path / a.file)),
                onnx.load(str(turned.path / b.file)),
                head,
                threshold,
                meta,
                maps[i],
            )
            path = Path(tmp) / a.file.replace(".onnx", ".gated.onnx")
            onnx.save(graph, str(path))
            files[path.name] = path
            specs.append(stage_spec(a, path))
        gated_paths = list(files.values())
        evaluation = _evaluate(
            float_version or frontal, frontal, turned, gated_paths, heads, threshold, maps, eval_specs, log
        )
        if float_version is not None:
            notes = {
                "frontal": f"{frontal.name}/{frontal.version}",
                "turned": "float: the turned network runs unquantised on the crops the gate sends it",
            }
            evaluation["quantization"] = int8_variant_record(
                float_version, frontal, evaluation, gated_paths, max_relative_loss, log, notes
            )
        published = publish_derived(
            store,
            fm,
            name,
            version,
            files,
            specs,
            config,
            gate_data_provenance(fm, tm),
            evaluation,
            description
            or (
                f"{fm.description}; turned faces (|yaw| >= {threshold:g} degrees by the stage's yaw head) "
                f"by {tm.name}/{tm.version}"
            ),
            overwrite=overwrite,
            log=log,
        )
    return published, {"model": f"{name}@{version}", "path": str(published.path), **config, **evaluation}


def stage_spec(base: StageSpec, path: Path) -> StageSpec:
    """``base``'s geometry for the stage file at ``path`` (its name and hash; no checkpoint)."""
    return StageSpec(
        **{**base.model_dump(), "file": path.name, "sha256": sha256_file(path), "checkpoint": None}
    )


def publish_derived(
    store: ModelStore,
    base: Manifest,
    name: str,
    version: str,
    files: Mapping[str, Path],
    stages: Sequence[StageSpec],
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    description: str,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> ModelVersion:
    """Publish a version whose stage files were built from published ones (gated, flip-averaged): ``base``'s
    scheme and box calibrations (and their evaluation records), ``config`` as its provenance, then verify."""
    from train.export.publish import _code_version, config_sha256

    manifest = Manifest(
        name=name,
        version=version,
        scheme=base.scheme,
        stages=list(stages),
        box_calibrations=base.box_calibrations,
        provenance=Provenance(
            config=dict(config),
            config_sha256=config_sha256(dict(config)),
            data=dict(data),
            created=datetime.now(UTC),
            code_version=_code_version(),
        ),
        evaluation={
            **{k: v for k, v in base.evaluation.items() if k.startswith("box_calibration")},
            **evaluation,
        },
        description=description,
    )
    published = store.publish(manifest, dict(files), overwrite=overwrite)
    store.verify(published)
    log(f"published {published.path}")
    return published


def run_lineage(config: Mapping[str, Any], configs: Path = Path("train/configs")) -> list[dict[str, Any]]:
    """Where a run's starting weights came from, back to a published model: each ``stage1.pretrained`` of
    the form ``runs/NAME/...`` is followed to ``configs/NAME.yaml`` and its data parts' kinds are listed
    (a run trained on renders alone may start from one that saw real photographs)."""
    import yaml

    out: list[dict[str, Any]] = []
    pretrained = (config.get("stage1") or {}).get("pretrained")
    while pretrained and len(out) < 20:
        parts = Path(str(pretrained)).parts
        path = configs / f"{parts[1]}.yaml" if len(parts) > 2 and parts[0] == "runs" else None
        if path is None or not path.is_file():
            out.append({"from": str(pretrained)})
            break
        c = yaml.safe_load(path.read_text())
        train = c["data"]["train"]
        kinds = sorted({str(part.get("kind")) for part in train.get("parts", [train])})
        out.append({"from": str(pretrained), "config": str(path), "trained_on": kinds})
        pretrained = (c.get("stage1") or {}).get("pretrained")
    return out


def gate_data_provenance(frontal: Manifest, turned: Manifest) -> dict[str, Any]:
    """A gated version's data record: the frontal model's (what most faces get), and the turned model's
    with its run lineage under ``turned``; ``synthetic_only`` and ``real_photographs`` cover both."""
    fd, td = dict(frontal.provenance.data), dict(turned.provenance.data)
    lineage = run_lineage(turned.provenance.config)
    real = bool(fd.get("real_photographs")) or bool(td.get("real_photographs"))
    real = real or any("real" in step.get("trained_on", []) for step in lineage)
    return {
        **fd,
        "synthetic_only": not real,
        "real_photographs": real,
        "summary": f"near-frontal faces: {fd.get('summary', '')}; turned faces: "
        f"{turned.name}/{turned.version}, whose own data and run lineage are under 'turned'",
        "turned": {**td, "lineage": lineage},
    }


def simulate_gated(
    frontal: Callable[[int, np.ndarray], np.ndarray],
    turned: Callable[[int, np.ndarray], np.ndarray],
    geometry: CascadeGeometry,
    heads: Sequence[YawHead],
    threshold: float,
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    *,
    maps: Sequence[CropMap | None] | None = None,
    graph: Callable[[int, np.ndarray], np.ndarray] | None = None,
    tolerance: float = 1e-5,
) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[str, Any]]]:
    """The gated cascade computed outside the graphs (both networks on every crop, :func:`gate_stage_outputs`
    per stage; with ``maps``, the turned network reads its window of each crop,
    :mod:`train.export.cross_crop`): -> image-space points ``[N, K, 2]`` and gate masks ``[N]`` after each
    stage. With ``graph`` (the gated graphs' runner), each stage's graph also runs on the same crops, must
    agree within ``tolerance`` (crop units; ``train.export.parity.ParityError`` otherwise), and the next
    stage's crops follow its points; the third list holds those parity records."""
    masks: list[np.ndarray] = []
    parity: list[dict[str, Any]] = []

    def gate(i: int, x: np.ndarray) -> np.ndarray:
        m = maps[i] if maps is not None else None
        out_t = turned(i, x) if m is None else map_output(turned(i, resample(x, m)), m)
        out, mask = gate_stage_outputs(frontal(i, x), out_t, heads[i], threshold)
        masks.append(mask)
        if graph is not None:
            names = ("numpy gate of the two graphs", "onnxruntime gated graph")
            got = graph(i, x)
            parity.append({"stage": i + 1, **compare_outputs(out, got, tolerance, names).to_dict()})
            out = got
        return out

    points = Cascade(geometry, gate).run(images, boxes)  # one call of ``gate`` per stage, every face
    return points, masks, parity


def int8_variant_record(
    float_version: ModelVersion,
    int8_source: ModelVersion,
    evaluation: Mapping[str, Any],
    paths: Sequence[Path],
    max_relative_loss: float,
    log: Callable[[str], None],
    notes: Mapping[str, str],
) -> dict[str, Any]:
    """The record of an int8 variant built from another int8 variant's graphs (a gated or a flip-averaged
    one, ``int8_source`` made by ``wingmark quantize``) beside its float version, keys as ``wingmark
    quantize`` writes: per set the two NMEs (refused past ``max_relative_loss``), the source's quantisation,
    the cascade's speed-up on the real held-out photos' crops and the synthetic validation set's (the work
    of a gated graph depends on the crops); the first of them at the top of ``speed``. ``notes``: what the
    variant is made of (e.g. ``{"frontal": ..., "turned": ...}``)."""
    from runtime.precision import cpu_flags, int8_units
    from train.export.quantize import _cpu_model, relative_change

    fe, qe = float_version.manifest.evaluation, evaluation
    pairs = {"val": (fe, qe)}
    if "test" in fe and "test" in qe:
        pairs["test"] = (fe["test"], qe["test"])
    pairs.update({k: (v, qe["sets"][k]) for k, v in fe.get("sets", {}).items() if k in qe.get("sets", {})})
    sets: dict[str, Any] = {}
    for key, (f, q) in pairs.items():
        a, b = float(f["final"]["nme"]), float(q["final"]["nme"])
        sets[key] = {"dataset": q["dataset"], "n": q["final"]["n"], "nme_float": a, "nme_int8": b,
                     "nme_change": b - a, "relative_change": relative_change(a, b)}  # fmt: skip
    worst = max(e["relative_change"] for e in sets.values())
    log("  NME float -> int8: " + "; ".join(f"{k} {e['relative_change']:+.1%}" for k, e in sets.items()))
    if worst > max_relative_loss:
        raise ValueError(
            f"int8 NME is {worst:+.1%} relative to float on one set; the limit is {max_relative_loss:.0%}"
        )

    # speed on the faces' own crops (the work of a gated graph depends on them): the real held-out photos
    # (near-frontal photos: none gated) and the synthetic validation set (a tenth gated)
    real = real_set(fe)
    speeds = {"real": compare_speed(float_version, paths, real, log)} if real else {}
    speeds["synthetic_val"] = compare_speed(float_version, paths, fe["dataset"], log)
    first = speeds[next(iter(speeds))]
    fq = int8_source.manifest.evaluation.get("quantization", {})
    return {
        "source": f"{float_version.name}/{float_version.version}",
        "mode": fq.get("mode", "static"),
        "format": fq.get("format"),
        **notes,
        "graphs": fq.get("graphs", []),
        "calibration": fq.get("calibration"),
        "sets": sets,
        "worst_relative_change": worst,
        "max_relative_loss": max_relative_loss,
        "speed": {**first, "by_set": speeds},
        "cpu": {"flags_int8": int8_units(cpu_flags()), "model": _cpu_model()},
    }


def speed_inputs(spec: Mapping[str, Any], scheme: str) -> tuple[list[Sample], list[np.ndarray], np.ndarray]:
    """The faces a speed comparison times: up to 64 of ``spec``, their images and tight boxes ``[N, 4]``."""
    from model_store.geometry import tight_box
    from train.dataset import load_samples

    samples = list(load_samples(dict(spec), scheme, progress=False))[:64]
    boxes = tight_box(np.stack([s.points for s in samples]).astype(np.float64))
    return samples, [s.image for s in samples], boxes


def compare_speed(
    float_version: ModelVersion,
    paths: Sequence[Path],
    spec: Mapping[str, Any],
    log: Callable[[str], None],
    batch_sizes: Sequence[int] = (1, 32),
    labels: tuple[str, str] = ("float", "int8"),
) -> dict[str, Any]:
    """``float_version``'s stage graphs vs ``paths`` (its int8 variant's, or any graphs of the same
    function), per stage (``train.export.quantize.measure_speed``, one thread) on the crops of up to 64
    faces of ``spec``: stage 1's from their tight boxes, stage 2's from ``float_version``'s stage 1 points.
    ``labels`` name the two in the record."""
    from train.export.quantize import measure_speed

    samples, images, boxes = speed_inputs(spec, float_version.manifest.scheme)
    geometry = CascadeGeometry.from_manifest(float_version.manifest)
    float_paths = [float_version.path / st.file for st in float_version.manifest.stages]
    run_float = stage_runner(float_paths)
    a, b = labels
    per_stage: list[dict[str, Any]] = []
    total_f = dict.fromkeys(batch_sizes, 0.0)
    total_q = dict.fromkeys(batch_sizes, 0.0)

    def time_stage(i: int, x: np.ndarray) -> np.ndarray:  # stage i's crops -> timed; the float output goes on
        tf, tq = measure_speed([float_paths[i], paths[i]], x.shape[-1], batch_sizes, inputs=x)
        per_stage.append({"stage": i + 1, f"{a}_ms": {n: round(tf[n] * 1e3, 3) for n in batch_sizes},
                          f"{b}_ms": {n: round(tq[n] * 1e3, 3) for n in batch_sizes}})  # fmt: skip
        for n in batch_sizes:
            total_f[n] += tf[n]
            total_q[n] += tq[n]
        return run_float(i, x)

    Cascade(geometry, time_stage).run(images, boxes)
    speedup = {n: round(total_f[n] / total_q[n], 3) for n in batch_sizes}
    log(f"  cascade speed-up on {len(samples)} faces of {dict(spec)}: {speedup}")
    return {
        "threads": 1,
        "batch_sizes": list(batch_sizes),
        "inputs": {"dataset": dict(spec), "faces": len(samples)},
        "stages": per_stage,
        "cascade_faces_per_s": {
            n: {a: round(n / total_f[n], 1), b: round(n / total_q[n], 1)} for n in batch_sizes
        },
        "cascade_speedup": speedup,
    }


def _evaluate(
    sets_from: ModelVersion,
    frontal: ModelVersion,
    turned: ModelVersion,
    gated_paths: Sequence[Path],
    heads: Sequence[YawHead],
    threshold: float,
    maps: Sequence[CropMap | None],
    eval_specs: Mapping[str, Mapping[str, Any]] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The gated cascade on each set, beside both models alone on the same faces; how many faces each
    stage gated, and each stage's parity with :func:`simulate_gated` on the same crops. The sets are
    ``eval_specs``, else those of ``sets_from``'s evaluation. Keys as an exported version's evaluation:
    the validation set's summary at the top, ``test`` and ``sets``."""
    from train.data.types import client_boxes
    from train.dataset import load_samples
    from train.export.evaluate import evaluate_cascade, set_record
    from train.metrics import DEFAULT_THRESHOLDS

    fm = frontal.manifest
    if eval_specs is None:
        eval_specs = evaluation_specs(sets_from.manifest.evaluation)
    geometry = CascadeGeometry.from_manifest(fm)
    turned_geometry = CascadeGeometry.from_manifest(turned.manifest)
    runners = {
        "gated": stage_runner(gated_paths),
        "frontal": stage_runner([frontal.path / s.file for s in fm.stages]),
        "turned": stage_runner([turned.path / s.file for s in turned.manifest.stages]),
    }

    results: dict[str, Any] = {}
    for key, spec in eval_specs.items():
        samples = list(load_samples(dict(spec), fm.scheme, progress=False))
        entry = set_record(spec)
        for who, run in runners.items():
            stages = turned_geometry.stages if who == "turned" else geometry.stages  # each alone on its crops
            r = evaluate_cascade(run, stages, samples, fm.scheme, thresholds=DEFAULT_THRESHOLDS)
            if who == "gated":
                entry.update(r)
            else:
                entry[f"{who}_alone"] = r["final"]
        images, boxes = [s.image for s in samples], client_boxes(samples)
        _, masks, parity = simulate_gated(
            runners["frontal"],
            runners["turned"],
            geometry,
            heads,
            threshold,
            images,
            boxes,
            maps=maps,
            graph=runners["gated"],
        )
        entry["gated_faces"] = {f"stage{i + 1}": int(m.sum()) for i, m in enumerate(masks)}
        entry["parity"] = parity
        log(
            f"  {key}: gated {entry['final']['nme']:.4f}, frontal alone {entry['frontal_alone']['nme']:.4f}, "
            f"turned alone {entry['turned_alone']['nme']:.4f} ({len(samples)} faces; gated per stage "
            f"{entry['gated_faces']}; graph vs numpy {max(p['max_abs_error'] for p in parity):.1e})"
        )
        results[key] = entry
    return evaluation_layout(results)


def evaluation_specs(evaluation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The dataset specs of an exported version's evaluation, keyed as :func:`evaluation_layout` lays them
    out: ``val`` (the top), ``test`` where present, then each of ``sets``."""
    specs = {"val": dict(evaluation["dataset"])}
    if "test" in evaluation:
        specs["test"] = dict(evaluation["test"]["dataset"])
    specs.update({k: dict(v["dataset"]) for k, v in evaluation.get("sets", {}).items()})
    return specs


def real_set(evaluation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The dataset spec of the first real-photo set under an evaluation's ``sets``, else None."""
    sets = evaluation.get("sets", {}).values()
    return next((dict(v["dataset"]) for v in sets if v["dataset"].get("kind") == "real"), None)


def evaluation_layout(results: dict[str, Any]) -> dict[str, Any]:
    """Per-set results (``val`` and others) in an exported version's evaluation layout: the validation
    set's at the top, ``test`` and the rest under ``sets``; the runtime and the box convention."""
    import onnxruntime

    results = dict(results)
    val = results.pop("val")
    out: dict[str, Any] = {
        **val,
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPU)",
        "boxes": "tight box of the ground-truth points (client box, identity calibration)",
    }
    if "test" in results:
        out["test"] = results.pop("test")
    if results:
        out["sets"] = results
    return out
