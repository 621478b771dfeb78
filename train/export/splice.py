"""A cascade spliced from the stages of published versions: stage i taken from version i.

A later stage re-crops from the earlier stage's points (``model_store.cascade``), so stages of different
networks and geometries (input size, crop rule, normalisation) chain as they are: each stage keeps its own
spec. Issue 18 measured one such splice: the Face Mesh network's stage 1 (``mediapipe-ibug68``, 192x192,
a wider crop) in front of ``faceapi-ibug68`` 4.9.0's gated, flip-averaged stage 2 (docs/models.md). The stage
files are copied unchanged, so the manifest, backends and the service need nothing new.

    wingmark splice runs/mp-store:mediapipe-ibug68@0.2.0 faceapi-ibug68@4.9.0 \\
        --name faceapi-ibug68-spliced --version 0.1.0

The version takes the scheme and box calibrations of the version giving its last stage (the calibrations
map a detector's box to the tight landmark box, the client-box convention every stage 1 shares), and is
evaluated on that version's evaluation sets beside it (or on ``eval_specs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.cascade import CascadeGeometry, StageGeometry
from model_store.store import ModelStore, ModelVersion
from runtime.cascade import Cascade
from train.export.flip import cost_record
from train.export.gate import (
    evaluation_layout,
    evaluation_specs,
    publish_derived,
    real_set,
    speed_inputs,
    stage_spec,
)
from train.export.parity import stage_runner

__all__ = ["SPLICE_KIND", "compare_cascades", "splice_version"]

SPLICE_KIND = "splice"  # provenance.config["kind"] of a spliced version


def splice_version(
    sources: Sequence[ModelVersion],
    name: str,
    version: str,
    store: ModelStore,
    *,
    eval_specs: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[ModelVersion, dict[str, Any]]:
    """Write ``name``/``version`` whose stage i is stage i of ``sources[i]`` (one source per stage, all of
    one scheme); evaluate it beside the last source alone; record its cost; publish into ``store``.
    -> version and report."""
    if len(sources) < 2:
        raise ValueError("a splice takes one source per stage, at least two")
    last = sources[-1].manifest
    for i, src in enumerate(sources, start=1):
        m = src.manifest
        if m.scheme != last.scheme:
            raise ValueError(f"{m.name}@{m.version} is {m.scheme}, {last.name}@{last.version} {last.scheme}")
        if len(m.stages) < i:
            raise ValueError(f"{m.name}@{m.version} has no stage {i}")
    config: dict[str, Any] = {
        "kind": SPLICE_KIND,
        "stages": [
            {
                "stage": i,
                "source": f"{s.manifest.name}@{s.manifest.version}",
                "source_provenance": {
                    "config": s.manifest.provenance.config,
                    "config_sha256": s.manifest.provenance.config_sha256,
                },
            }
            for i, s in enumerate(sources, start=1)
        ],
    }
    files: dict[str, Path] = {}
    specs = []
    for i, src in enumerate(sources, start=1):
        st = src.manifest.stages[i - 1]
        path = src.path / st.file
        if path.name in files:
            raise ValueError(f"two stages share the file name {path.name}")
        files[path.name] = path
        specs.append(stage_spec(st, path))
    paths = list(files.values())
    geometry = [StageGeometry.from_spec(s) for s in specs]
    evaluation = _evaluate(sources[-1], paths, geometry, eval_specs, log)
    cost = real_set(evaluation) or evaluation["dataset"]
    evaluation["splice_cost"] = compare_cascades(
        {"last_source": sources[-1], "spliced": (paths, geometry)}, last.scheme, cost, log
    )
    evaluation["cost"] = cost_record(paths, evaluation["splice_cost"], "spliced")
    data = {"stages": [dict(s.manifest.provenance.data) for s in sources]}
    published = publish_derived(
        store,
        last,
        name,
        version,
        files,
        specs,
        config,
        data,
        evaluation,
        description
        or "spliced cascade: " + ", ".join(f"stage {c['stage']} of {c['source']}" for c in config["stages"]),
        overwrite=overwrite,
        log=log,
    )
    return published, {"model": f"{name}@{version}", "path": str(published.path), **config, **evaluation}


def compare_cascades(
    cascades: Mapping[str, ModelVersion | tuple[Sequence[Path], Sequence[StageGeometry]]],
    scheme: str,
    spec: Mapping[str, Any],
    log: Callable[[str], None],
    batch_sizes: Sequence[int] = (1, 32),
) -> dict[str, Any]:
    """Each cascade (a version, or stage files with their geometry) timed stage by stage on its own crops
    of up to 64 faces of ``spec`` (stage 1's from the tight boxes, each later stage's from its own earlier
    stage's points; ``train.export.quantize.measure_speed``, one thread): the record of
    :func:`train.export.gate.compare_speed`, for cascades whose stages need not share a geometry."""
    samples, images, boxes = speed_inputs(spec, scheme)
    per_stage: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, dict[int, float]] = {}
    for label, cascade in cascades.items():
        if isinstance(cascade, ModelVersion):
            paths = [cascade.path / st.file for st in cascade.manifest.stages]
            stages = CascadeGeometry.from_manifest(cascade.manifest).stages
        else:
            paths, stages = list(cascade[0]), list(cascade[1])
        per_stage[label], totals[label] = _time_stages(
            paths, CascadeGeometry(stages, scheme), images, boxes, batch_sizes
        )
    faces_per_s = {n: {k: round(n / t[n], 1) for k, t in totals.items()} for n in batch_sizes}
    log(f"  cascade faces/s on {len(samples)} faces of {dict(spec)}: {faces_per_s}")
    return {
        "threads": 1,
        "batch_sizes": list(batch_sizes),
        "inputs": {"dataset": dict(spec), "faces": len(samples)},
        "stages": per_stage,
        "cascade_faces_per_s": faces_per_s,
    }


def _time_stages(
    paths: Sequence[Path],
    geometry: CascadeGeometry,
    images: Sequence[np.ndarray],
    boxes: np.ndarray,
    batch_sizes: Sequence[int],
) -> tuple[list[dict[str, Any]], dict[int, float]]:
    """One cascade run on ``images`` from ``boxes``, each stage timed on its own crops
    (``train.export.quantize.measure_speed``, one thread) -> per-stage rows and seconds per batch size."""
    from train.export.quantize import measure_speed

    run = stage_runner(paths)
    rows: list[dict[str, Any]] = []
    total = dict.fromkeys(batch_sizes, 0.0)

    def timed(i: int, x: np.ndarray) -> np.ndarray:
        (t,) = measure_speed([paths[i]], x.shape[-1], batch_sizes, inputs=x)
        rows.append({"stage": i + 1, "ms": {n: round(t[n] * 1e3, 3) for n in batch_sizes}})
        for n in batch_sizes:
            total[n] += t[n]
        return np.asarray(run(i, x))

    Cascade(geometry, timed).run(images, boxes)
    return rows, total


def _evaluate(
    last: ModelVersion,
    paths: Sequence[Path],
    geometry: Sequence[StageGeometry],
    eval_specs: Mapping[str, Mapping[str, Any]] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The spliced cascade on each set (default: ``last``'s own evaluation sets) beside ``last`` alone,
    in an exported version's evaluation layout."""
    from train.dataset import load_samples
    from train.export.evaluate import evaluate_cascade, set_record
    from train.metrics import DEFAULT_THRESHOLDS

    lm = last.manifest
    sets = dict(eval_specs) if eval_specs is not None else evaluation_specs(lm.evaluation)
    run_spliced = stage_runner(paths)
    run_last = stage_runner([last.path / s.file for s in lm.stages])
    last_geometry = CascadeGeometry.from_manifest(lm)
    results: dict[str, Any] = {}
    for key, spec in sets.items():
        samples = list(load_samples(dict(spec), lm.scheme, progress=False))
        entry = set_record(spec)
        entry.update(
            evaluate_cascade(run_spliced, geometry, samples, lm.scheme, thresholds=DEFAULT_THRESHOLDS)
        )
        entry["last_source_alone"] = evaluate_cascade(
            run_last, last_geometry.stages, samples, lm.scheme, thresholds=DEFAULT_THRESHOLDS
        )["final"]
        log(
            f"  {key}: spliced {entry['final']['nme']:.4f}, {lm.name}@{lm.version} alone "
            f"{entry['last_source_alone']['nme']:.4f} ({len(samples)} faces)"
        )
        results[key] = entry
    return evaluation_layout(results)
