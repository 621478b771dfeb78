"""A pose-gated version at other |yaw| thresholds, without its two source models: the threshold moved in
its graphs.

    python -m tools.studies.gate_threshold faceapi-ibug68@4.9.0 --thresholds 30,20,15,10,0 \\
        --out docs/gate_threshold_ibug68_4.9.0.json

``wingmark gate --threshold`` needs the frontal and the turned model as versions of their own; a published
gated version (``wingmark gate``, also flip-averaged) holds both networks and a constant
``gate/threshold`` per stage. This study copies the version into a scratch store once per threshold with
that constant replaced (and the copy's manifest made to match its files), then measures each copy from the
tight box of the labels with ``tools.studies.yaw_errors``: the synthetic validation set (exact labels)
and, where the caches exist, the real held-out faces (teacher labels) and the re-posed held-out faces
(teacher labels carried through the mesh). Nothing is published.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.studies import write_json
from tools.studies.real_bench import default_cache

__all__ = ["THRESHOLD_SUFFIX", "main", "with_threshold"]

THRESHOLD_SUFFIX = "gate/threshold"  # train.export.gate names each stage's constant so (maybe prefixed)


def with_threshold(version_dir: Path, out_dir: Path, threshold: float) -> int:
    """Copy the gated version at ``version_dir`` to ``out_dir`` with every ``gate/threshold`` constant
    set to ``threshold`` degrees and the manifest's file hashes and recorded threshold to match; returns
    the number of constants replaced (0: not a gated version, and ValueError)."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(version_dir, out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    replaced = 0
    for stage in manifest["stages"]:
        path = out_dir / stage["file"]
        graph = onnx.load(str(path))
        for init in graph.graph.initializer:
            if init.name.endswith(THRESHOLD_SUFFIX):
                init.CopyFrom(numpy_helper.from_array(np.array([threshold], np.float32), init.name))
                replaced += 1
        onnx.save(graph, str(path))
        stage["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    if not replaced:
        raise ValueError(f"{version_dir}: no {THRESHOLD_SUFFIX} constant (not a pose-gated version)")
    _set_threshold(manifest["provenance"], threshold)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return replaced


def _set_threshold(record: Any, threshold: float) -> None:
    """Every ``threshold_deg`` in a (nested) provenance record -> ``threshold``."""
    if isinstance(record, dict):
        for key, value in record.items():
            if key == "threshold_deg":
                record[key] = threshold
            else:
                _set_threshold(value, threshold)
    elif isinstance(record, list):
        for value in record:
            _set_threshold(value, threshold)


def main(argv: list[str] | None = None) -> int:
    from tools.studies.yaw_errors import DATA_LABELS, _model_table, evaluation_sets
    from train.export.gate import resolve_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a pose-gated version, [STORE_DIR:]NAME@VERSION")
    ap.add_argument("--thresholds", default="30,20,10,0", help="comma-separated |yaw| thresholds, degrees")
    ap.add_argument("--real-root", type=Path, default=default_cache())
    ap.add_argument("--out", type=Path, default=None, help="JSON report (default: print only)")
    args = ap.parse_args(argv)
    mv = resolve_spec(args.model)
    sets = evaluation_sets(args.real_root)
    report: dict[str, Any] = {"model": f"{mv.name}@{mv.version}", "client_box": "tight", "sets": {}}
    for set_name, spec in sets.items():
        report["sets"][set_name] = {"data": spec, "labels": DATA_LABELS[spec["kind"]], "thresholds": {}}
    with tempfile.TemporaryDirectory(prefix="gate-threshold-") as scratch:
        for t in [float(x) for x in args.thresholds.split(",")]:
            copy = Path(scratch) / f"t{t:g}"
            with_threshold(mv.path, copy / mv.name / mv.version, t)
            for set_name, spec in sets.items():
                table = _model_table(f"{copy}:{mv.name}@{mv.version}", spec)
                last = table[f"stage{len(table['stages'])}"]
                report["sets"][set_name]["thresholds"][f"{t:g}"] = last
                bins = " ".join(f"{k} {v['nme'] * 100:.2f}" for k, v in last.items())
                print(f"threshold {t:g}: {set_name}: {bins}", flush=True)
    if args.out:
        write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
