"""Trained run -> ONNX stages -> evaluated, calibrated, published model version.

:func:`export_run` does the whole of ``wingmark export``:

1. loads each stage checkpoint of a run directory (``stage1/best.pt``, ``stage2/best.pt``);
2. exports each stage to ONNX (:func:`train.export.onnx.export_onnx`: batch norm folded, dynamic
   batch, checked, simplified), optionally with float16 weight storage;
3. checks ONNX Runtime against PyTorch on a real batch of validation crops of that stage (failure
   above the tolerance);
4. evaluates the exported cascade with ONNX Runtime on the validation set the run was trained
   against (NME, AUC, failure rate per stage), exactly as the service runs it;
5. fits a box calibration for every registered detector (``runtime.detectors.DETECTORS``) on the
   validation images where it finds the face (for ``dlib_hog``, a documented default when it finds too
   few; another detector that finds too few gets its own per-scheme calibration from
   ``model_store/detectors`` (:func:`own_calibration`), else none, and then its boxes are used as they are);
6. writes the manifest (checksums, resolved training config and its sha256, data provenance,
   evaluation, calibrations) and publishes atomically with ``ModelStore.publish``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_store.geometry import CropRule, tight_box
from model_store.manifest import (
    MANIFEST_FILE,
    BoxCalibrationSpec,
    CropRuleSpec,
    Manifest,
    NormalisationSpec,
    Provenance,
    StageSpec,
    read_manifest,
)
from model_store.manifest import sha256_file as manifest_sha256
from model_store.preprocess import Normalisation
from model_store.schemes import Scheme, get_scheme
from model_store.store import ModelStore, ModelVersion
from train.data.types import Sample
from train.export.evaluate import TEACHER_LABELS, StageGeometry, evaluate_cascade, set_record, stage_inputs
from train.export.onnx import count_ops, export_onnx, split_member
from train.export.parity import ParityReport, compare_outputs, onnx_runtime_session, run_onnx, stage_runner
from train.metrics import DEFAULT_THRESHOLDS

__all__ = [
    "DEFAULT_BOX_CALIBRATIONS",
    "ExportedStage",
    "calibrate_detector",
    "config_sha256",
    "data_provenance",
    "export_run",
    "own_calibration",
    "parity_batch",
    "stage_geometry",
]

# Used when dlib finds too few synthetic faces to fit a calibration. Tight landmark box relative to
# dlib's HOG box (cx += dx*w, cy += dy*h, w *= sw, h *= sh). Rough values, documented in
# docs/models.md: dlib's box is about as wide as the 68-point jaw but starts below the brows and
# ends above the chin; the 19-point AFLW box has no jaw, so it is narrower.
DEFAULT_BOX_CALIBRATIONS: dict[str, BoxCalibrationSpec] = {
    "ibug68": BoxCalibrationSpec(
        dx=0.0, dy=0.05, sw=1.0, sh=1.1, note="documented default (not fitted): dlib found too few faces"
    ),
    "aflw19": BoxCalibrationSpec(
        dx=0.0, dy=0.0, sw=0.85, sh=1.0, note="documented default (not fitted): dlib found too few faces"
    ),
}


@dataclass
class ExportedStage:
    index: int  # 0-based position in the cascade
    checkpoint: Path
    checkpoint_data: dict[str, Any]
    model: nn.Module
    onnx_path: Path
    onnx_fp32_path: Path
    parity: ParityReport
    parity_fp32: ParityReport
    ops: dict[str, int]

    @property
    def geometry(self) -> StageGeometry:
        return stage_geometry(self.checkpoint_data)


def stage_geometry(checkpoint: Mapping[str, Any]) -> StageGeometry:
    """Input size, crop rule and normalisation recorded in a stage checkpoint."""
    norm = checkpoint["normalisation"]
    return StageGeometry(
        int(checkpoint["input_size"]),
        CropRule.from_dict(checkpoint["crop_rule"]),
        Normalisation(mean=tuple(float(v) for v in norm["mean"]), std=tuple(float(v) for v in norm["std"])),  # type: ignore[arg-type]
    )


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a resolved config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _code_version() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"git:{head}"


def _parts(spec: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """A dataset spec's leaf parts (a ``mix`` is flattened)."""
    if not spec:
        return []
    if spec.get("kind") == "mix":
        return [p for part in spec.get("parts", []) for p in _parts(part)]
    return [spec]


def _real_cache_provenance(root: str | Path) -> dict[str, Any]:
    """Teachers, licence note and per-source packages of a real-face cache (its manifest.json)."""
    path = Path(root) / "manifest.json"
    if not path.exists():
        return {"root": str(root), "note": "manifest.json not found when the model was published"}
    m = json.loads(path.read_text())
    keys = ("registry", "package", "version", "licence", "photo_rights", "train", "test")
    return {
        "root": str(root),
        "created": m.get("created"),
        "teacher": m.get("teacher"),
        "second_teacher": m.get("second_teacher_model"),
        "consensus": m.get("consensus"),
        "keep_threshold": m.get("keep_threshold"),
        "labels": TEACHER_LABELS,
        "licence_note": m.get("licence_note"),
        "sources": {
            name: {k: src.get(k) for k in keys}
            for name, src in m.get("sources", {}).items()
            if src.get("status", "ok") == "ok"
        },
        "summary": m.get("summary"),
    }


def data_provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the model was trained and validated on, from the resolved config; for real-face parts,
    the cache's teachers, sources and licences."""
    data = config["data"]
    parts = _parts(data.get("train")) + _parts(data.get("val"))
    kinds = sorted({str(p["kind"]) for p in parts})
    synthetic_only = kinds == ["synthetic"]
    out = {
        "scheme": data["scheme"],
        "train": data["train"],
        "val": data["val"],
        "test": data.get("test"),
        "pdb": data.get("pdb"),
        "augment": data.get("augment"),
        "kinds": kinds,
        "synthetic_only": synthetic_only,
        "real_photographs": "real" in kinds or any(k in kinds for k in ("300w", "aflw")),
        "summary": (
            "Synthetic faces rendered by train.data.synthetic (exact ground truth, controlled pose); "
            "no real photograph was seen in training."
            if synthetic_only
            else "Trained on: " + ", ".join(kinds)
        ),
    }
    initial = {
        k: _initial_weights(config[k]) for k in ("stage1", "stage2") if config.get(k, {}).get("pretrained")
    }
    if initial:
        out["initial_weights"] = initial
    roots = sorted({str(p["root"]) for p in _parts(data.get("train")) if p["kind"] == "real"})
    if roots:
        out["real_faces"] = [_real_cache_provenance(r) for r in roots]
        out["licence"] = (
            "Trained on real photos with dlib 68-point teacher labels: dlib's model was trained on iBUG "
            "300-W, whose terms exclude commercial use, and the photos' rights are mostly not stated "
            "(see real_faces[].sources and docs/models.md). Not cleared for commercial use."
        )
    return out


def _initial_weights(stage: Mapping[str, Any]) -> dict[str, Any]:
    """Where a warm-started stage's weights came from (and under which licence, for third-party ones)."""
    src = str(stage["pretrained"])
    if src == "face-api":
        from train.models.faceapi import face_api_weights_record

        return face_api_weights_record()
    if src == "mediapipe":
        from train.models.mediapipe import mesh_weights_record

        return mesh_weights_record()
    if src == "stage1":
        return {"source": "this run's own trained stage 1"}
    out: dict[str, Any] = {"source": src}
    file, member = split_member(src)
    if member is not None:
        out["member"] = member  # one network of a pose-gated stage
    folder = file.parent
    if (
        file.suffix == ".onnx" and (folder / MANIFEST_FILE).is_file()
    ):  # a published stage: its model, its start
        m = read_manifest(folder)
        out["model"] = f"{m.name}@{m.version}"
        files = [st.file for st in m.stages]
        which = f"stage{files.index(file.name) + 1}" if file.name in files else None
        earlier = m.provenance.data.get("initial_weights", {})
        if which in earlier:
            out["initial_weights"] = earlier[which]
    return out


def parity_batch(
    samples: Sequence[Sample], scheme: Scheme, stage_index: int, geometry: StageGeometry, n: int = 32
) -> np.ndarray:
    """A real batch ``[n, 3, S, S]`` of validation crops for a stage: stage 1 from the tight
    landmark box, later stages re-aligned on the ground-truth points."""
    chosen = list(samples[:n])
    gt = np.stack([s.points for s in chosen]).astype(np.float64)
    x, _ = stage_inputs(
        [s.image for s in chosen], stage_index, geometry, scheme, boxes=tight_box(gt), previous=gt
    )
    return x


def calibrate_detector(
    samples: Sequence[Sample],
    scheme: Scheme,
    *,
    min_faces: int = 20,
    detector: Any = None,
) -> tuple[BoxCalibrationSpec, dict[str, Any], np.ndarray, np.ndarray]:
    """Fit ``detector``'s box calibration (default: dlib HOG) on ``samples``.

    Returns ``(calibration, info, matched_indices [M], matched_boxes [M, 4])`` where the boxes are
    the raw detector boxes of the faces it found (for an end-to-end evaluation from detector boxes).
    When fewer than ``min_faces`` faces are found the scheme's documented default (dlib HOG's) is
    returned and ``info["fitted"]`` is False.
    """
    from runtime.detectors import box_iou, create_detector, fit_box_calibration

    det = detector if detector is not None else create_detector("dlib_hog")
    assert det is not None
    images = [s.image for s in samples]
    points = [s.points for s in samples]
    report: dict[str, Any] = {}
    matched_idx: list[int] = []
    matched_boxes: list[np.ndarray] = []
    for i, (img, pts) in enumerate(zip(images, points, strict=True)):
        boxes = det.detect(img).boxes
        if len(boxes):
            iou = box_iou(tight_box(np.asarray(pts, dtype=np.float64))[None], boxes)[0]
            j = int(np.argmax(iou))
            if iou[j] >= 0.3:
                matched_idx.append(i)
                matched_boxes.append(boxes[j])
    info: dict[str, Any] = {
        "detector": getattr(det, "name", "dlib_hog"),
        "images": len(samples),
        "faces_found": len(matched_idx),
        "min_faces": min_faces,
    }
    idx = np.asarray(matched_idx, dtype=np.int64)
    found = np.asarray(matched_boxes, dtype=np.float64).reshape(-1, 4)
    if len(matched_idx) < max(1, min_faces):
        info["fitted"] = False
        spec = DEFAULT_BOX_CALIBRATIONS[scheme.name].model_copy(update={"fitted_on": None})
        return spec, info, idx, found
    sub = [samples[i] for i in matched_idx]
    cal = fit_box_calibration(det, [s.image for s in sub], [s.points for s in sub], report=report)
    info["fitted"] = True
    info["fit_report"] = report
    spec = BoxCalibrationSpec(
        dx=cal.dx,
        dy=cal.dy,
        sw=cal.sw,
        sh=cal.sh,
        fitted_on=int(report.get("matched", len(matched_idx))),
        note=f"fitted on {report.get('matched', len(matched_idx))} validation faces found by "
        f"{info['detector']}",
    )
    return spec, info, idx, found


def own_calibration(detector: Any, scheme_name: str) -> BoxCalibrationSpec | None:
    """``detector``'s own box calibration for ``scheme_name`` (``calibration.json`` beside its ONNX
    file, fitted on real faces by ``wingmark data detect-bench --write-calibration``), or None."""
    own = getattr(detector, "calibration", None)
    cal = own(scheme_name) if callable(own) else None
    if cal is None:
        return None
    name = getattr(detector, "name", "detector")
    return BoxCalibrationSpec(dx=cal.dx, dy=cal.dy, sw=cal.sw, sh=cal.sh, note=f"{name}'s own (real faces)")


def _pytorch_reference(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def export_run(
    run_dir: Path,
    name: str,
    version: str,
    *,
    store: ModelStore | None = None,
    work_dir: Path | None = None,
    which: str = "best",
    fp16_weights: bool = False,
    tolerance: float = 1e-4,
    fp16_tolerance: float = 2e-3,
    eval_data: Mapping[str, Any] | None = None,
    min_dlib_faces: int = 20,
    description: str = "",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[ModelVersion, dict[str, Any]]:
    """Export, check, evaluate and publish the cascade of ``run_dir`` as ``name``/``version``.

    ``tolerance`` bounds the fp32 ONNX vs PyTorch max abs error (crop units); ``fp16_tolerance`` the
    published file's when ``fp16_weights``. ``eval_data`` overrides the evaluation dataset spec
    (default: the run's validation set). Returns the published version and the export report
    (also written as ``export_report.json`` in ``work_dir``).
    """
    from train.dataset import load_samples
    from train.loop import load_checkpoint, run_stage_paths

    store = store or ModelStore()
    run_dir = Path(run_dir)
    work = Path(work_dir) if work_dir is not None else run_dir / "export" / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)

    paths = run_stage_paths(run_dir, which)
    loaded = [load_checkpoint(p) for p in paths]
    first = loaded[0][1]
    scheme = get_scheme(str(first["scheme"]))
    for k, (_, ck) in enumerate(loaded, start=1):
        if ck["scheme"] != scheme.name or int(ck["num_points"]) != scheme.num_points:
            raise ValueError(f"stage {k} checkpoint is for {ck['scheme']}/{ck['num_points']} points")
        if int(ck.get("stage", k)) != k:
            raise ValueError(f"{paths[k - 1]} holds stage {ck.get('stage')}, expected {k}")
    config: dict[str, Any] = dict(loaded[-1][1]["config"])
    spec = dict(eval_data or config["data"]["val"])
    log(f"export {name}/{version}: {len(loaded)} stage(s) from {run_dir}; evaluation data {spec}")
    samples = load_samples(spec, scheme.name, progress=False)

    stages: list[ExportedStage] = []
    for idx, ((model, ck), path) in enumerate(zip(loaded, paths, strict=True)):
        size = int(ck["input_size"])
        stem = f"stage{idx + 1}_{ck['architecture']}"
        meta = {
            "wingmark.model": name,
            "wingmark.version": version,
            "wingmark.stage": str(idx + 1),
            "wingmark.architecture": str(ck["architecture"]),
            "wingmark.scheme": scheme.name,
            "wingmark.num_points": str(scheme.num_points),
            "wingmark.input_size": str(size),
            "wingmark.output": "crop_unit [N, 2K]",
        }
        fp32_path = work / f"{stem}.fp32.onnx"
        graph = export_onnx(model, fp32_path, size, metadata=meta)
        batch = parity_batch(samples, scheme, idx, stage_geometry(ck))
        reference = _pytorch_reference(model, batch)
        parity32 = compare_outputs(
            reference,
            run_onnx(onnx_runtime_session(fp32_path), batch),
            tolerance,
            ("pytorch", "onnxruntime fp32"),
        )
        log(
            f"  stage {idx + 1} ({ck['architecture']}, {size}px): "
            f"fp32 parity max abs {parity32.max_abs_error:.2e}"
        )
        final_path, parity = fp32_path, parity32
        if fp16_weights:
            final_path = work / f"{stem}.fp16w.onnx"
            export_onnx(
                model, final_path, size, metadata={**meta, "wingmark.weights": "float16"}, fp16_weights=True
            )
            parity = compare_outputs(
                reference,
                run_onnx(onnx_runtime_session(final_path), batch),
                fp16_tolerance,
                ("pytorch", "onnxruntime fp16-weights"),
            )
            log(f"  stage {idx + 1}: fp16-weight parity max abs {parity.max_abs_error:.2e}")
        stages.append(
            ExportedStage(idx, path, ck, model, final_path, fp32_path, parity, parity32, count_ops(graph))
        )

    geometries = [s.geometry for s in stages]
    thresholds = tuple(config.get("eval", {}).get("thresholds") or DEFAULT_THRESHOLDS)
    # the files as published: every evaluation
    run_published = stage_runner([s.onnx_path for s in stages], threads=1)
    log(f"  evaluating the ONNX cascade on {len(samples)} validation faces")
    evaluation = evaluate_cascade(run_published, geometries, samples, scheme, thresholds=thresholds)
    if fp16_weights:
        fp32_eval = evaluate_cascade(
            stage_runner([s.onnx_fp32_path for s in stages], threads=1),
            geometries,
            samples,
            scheme,
            thresholds=thresholds,
        )
        evaluation["fp32_weights_nme"] = fp32_eval["final"]["nme"]
        evaluation["fp16_weights_nme_change"] = evaluation["final"]["nme"] - fp32_eval["final"]["nme"]

    def _evaluate_on(name: str, set_spec: dict[str, Any]) -> dict[str, Any]:
        set_samples = load_samples(set_spec, scheme.name, progress=False)
        log(f"  evaluating the ONNX cascade on {len(set_samples)} {name} faces")
        result = set_record(set_spec)
        result.update(evaluate_cascade(run_published, geometries, set_samples, scheme, thresholds=thresholds))
        return result

    # the run's test set and its extra evaluation sets (eval.sets, e.g. the real held-out faces)
    test_spec = config["data"].get("test")
    test_eval: dict[str, Any] | None = None
    set_evals: dict[str, Any] = {}
    if eval_data is None:
        if test_spec and dict(test_spec) != spec:
            test_eval = _evaluate_on("test", dict(test_spec))
        for set_name, set_spec in ((config.get("eval") or {}).get("sets") or {}).items():
            set_evals[str(set_name)] = _evaluate_on(str(set_name), dict(set_spec))

    from runtime.detectors import DETECTORS, create_detector

    calibrations: dict[str, BoxCalibrationSpec] = {}
    cal_infos: dict[str, dict[str, Any]] = {}
    for det_name in sorted(DETECTORS):  # every registered detector gets its own calibration
        log(f"  fitting the {det_name} box calibration")
        detector = create_detector(det_name)
        calibration, cal_info, found_idx, found_boxes = calibrate_detector(
            samples, scheme, min_faces=min_dlib_faces, detector=detector
        )
        if len(found_idx):
            calibrated = calibration.to_calibration().apply(found_boxes)
            sub = [samples[i] for i in found_idx]
            from_det = evaluate_cascade(
                run_published, geometries, sub, scheme, boxes=calibrated, thresholds=thresholds
            )
            cal_info["cascade_from_calibrated_boxes"] = from_det["final"]
        log(
            f"  {det_name} found {cal_info['faces_found']}/{len(samples)} faces; "
            + ("fitted" if cal_info["fitted"] else "too few to fit")
        )
        if cal_info["fitted"] or det_name == "dlib_hog":  # dlib HOG falls back to its documented default
            calibrations[det_name] = calibration
        elif (own := own_calibration(detector, scheme.name)) is not None:
            calibrations[det_name] = own
        if not cal_info["fitted"]:
            own_used = det_name != "dlib_hog" and det_name in calibrations
            cal_info["used"] = (
                "default" if det_name == "dlib_hog" else "detector's own" if own_used else "none"
            )
        cal_infos[det_name] = cal_info

    import onnxruntime

    evaluation = {
        "dataset": spec,
        "n": evaluation.pop("n"),
        "normaliser": scheme.normaliser,
        "runtime": f"onnxruntime {onnxruntime.__version__} (CPU)",
        "boxes": "tight box of the ground-truth points (client box, identity calibration)",
        **evaluation,
        "pytorch_val": {f"stage{k}": dict(ck.get("val") or {}) for k, (_, ck) in enumerate(loaded, start=1)},
        "parity": [
            {
                "stage": s.index + 1,
                **s.parity.to_dict(),
                "fp32_onnx_max_abs_error": s.parity_fp32.max_abs_error,
            }
            for s in stages
        ],
        "box_calibration": cal_infos.get("dlib_hog", {}),  # the service's default detector
        "box_calibrations": cal_infos,  # every registered detector's fit, by name
    }
    if test_eval is not None:
        evaluation["test"] = test_eval
    if set_evals:
        evaluation["sets"] = set_evals

    stage_specs = [
        StageSpec(
            name=f"stage{s.index + 1}",
            architecture=str(s.checkpoint_data["architecture"]),
            input_size=int(s.checkpoint_data["input_size"]),
            file=f"stage{s.index + 1}_{s.checkpoint_data['architecture']}.onnx",
            sha256=manifest_sha256(s.onnx_path),
            normalisation=NormalisationSpec(**s.checkpoint_data["normalisation"]),
            crop_rule=CropRuleSpec(**s.checkpoint_data["crop_rule"]),
        )
        for s in stages
    ]
    manifest = Manifest(
        name=name,
        version=version,
        scheme=scheme.name,
        stages=stage_specs,
        box_calibrations={
            "client": BoxCalibrationSpec(note="identity: client boxes are tight landmark boxes"),
            **calibrations,
        },
        provenance=Provenance(
            config=config,
            config_sha256=config_sha256(config),
            data=data_provenance(config),
            created=datetime.now(UTC),
            code_version=_code_version(),
        ),
        evaluation=evaluation,
        description=description
        or (
            f"{len(stages)}-stage {'/'.join(str(s.checkpoint_data['architecture']) for s in stages)} "
            f"cascade, {scheme.num_points} points ({scheme.name}), Wing loss"
            + (", weights stored as float16" if fp16_weights else "")
        ),
    )
    files = {spec_.file: s.onnx_path for spec_, s in zip(stage_specs, stages, strict=True)}
    published = store.publish(manifest, files, overwrite=overwrite)
    store.verify(published)
    report = {
        "model": name,
        "version": version,
        "path": str(published.path),
        "run_dir": str(run_dir),
        "files": {
            f: {"bytes": (published.path / f).stat().st_size, "sha256": spec_.sha256}
            for f, spec_ in zip(files, stage_specs, strict=True)
        },
        "ops": {f"stage{s.index + 1}": s.ops for s in stages},
        "host": platform.node(),
        "evaluation": evaluation,
    }
    (work / "export_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"published {published.path} (final NME {evaluation['final']['nme']:.4f})")
    return published, report
