"""The images of ``wingmark benchmark``, each a JPEG with one face and its client box, made the same way
on every machine (no downloads): the 512x512 synthetic face, and an HD frame (1920x1080) with one
synthetic face composited on a textured background, as a camera frame with one person in it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from model_store.store import DEFAULT_MODELS, ModelStore, default_root

__all__ = ["BenchImage", "bench_image", "hd_frame"]

BenchImage = tuple[bytes, np.ndarray, list[float], str]  # JPEG bytes, decoded pixels, client box, source

HD_SIZE = (1920, 1080)
HD_FACE_RENDER = 640  # px: the synthetic render pasted into the frame (its face box is about 360 px)
HD_AT = (1080, 220)  # where the render's top-left corner lands in the frame


def _validation_spec(limit: int, image_size: int | None = None) -> dict[str, Any]:
    model = ModelStore(default_root()).resolve(DEFAULT_MODELS["ibug68"])
    spec = {**model.manifest.evaluation["dataset"], "limit": limit}
    return spec if image_size is None else {**spec, "image_size": image_size}


def _decoded(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def bench_image(path: Path | None, box: list[float] | None) -> BenchImage:
    """JPEG bytes, decoded pixels, a tight client box, and where the image came from: ``path`` (its
    box from ``box`` or dlib's detection), else the first synthetic validation face (seed 2) that dlib
    finds, upscaled to 512x512."""
    from PIL import Image

    from runtime.detectors import create_detector

    if path is not None:
        data = path.read_bytes()
        pixels = _decoded(data)
        if box is None:
            found = create_detector("dlib_hog", max_side=640, upsample=0, threshold=0.0, instances=1)
            assert found is not None
            dets = found.detect(pixels)
            if not len(dets.boxes):
                raise SystemExit(f"no face detected in {path}; pass --box")
            box = [float(v) for v in dets.boxes[0]]
        return data, pixels, box, str(path)
    from model_store.geometry import tight_box
    from train.export.evaluate import load_synthetic

    detector = create_detector("dlib_hog", max_side=1024, upsample=0, threshold=0.0, instances=1)
    assert detector is not None
    for sample in load_synthetic(_validation_spec(16), "ibug68"):
        big = Image.fromarray(sample.image).resize((512, 512), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=92)
        pixels = _decoded(buf.getvalue())
        if len(detector.detect(pixels).boxes) == 1:
            tb = [round(float(v) * 2, 2) for v in tight_box(sample.points)]
            return buf.getvalue(), pixels, tb, "synthetic validation face (seed 2), 512x512 JPEG q92"
    raise SystemExit("no synthetic face found by the detector; pass --image")


def hd_frame(path: Path | None = None, box: list[float] | None = None) -> BenchImage:
    """A 1920x1080 JPEG (q90) with one face: ``path`` and ``box`` where given (box: dlib's detection
    where not), else made here: the first synthetic validation face (seed 2) rendered at 640x640 and
    pasted at (1080, 220) on a background of smooth colour gradients and seeded noise (so that the
    JPEG codes texture everywhere, as in a camera frame); the box is the face's tight landmark box."""
    if path is not None:
        return bench_image(path, box)
    from PIL import Image, ImageFilter

    from model_store.geometry import tight_box
    from train.export.evaluate import load_synthetic

    w, h = HD_SIZE
    rng = np.random.default_rng(24)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [90 + 60 * np.sin(x / 310 + c) * np.cos(y / 230 - 0.7 * c) + 25 * (x / w) for c in range(3)], axis=-1
    )
    grain = Image.fromarray((rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8))
    grain = grain.resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    frame = np.clip(base + 0.35 * (np.asarray(grain, dtype=np.float32) - 127.5), 0, 255).astype(np.uint8)
    sample = load_synthetic(_validation_spec(1, HD_FACE_RENDER), "ibug68")[0]
    fx, fy = HD_AT
    frame[fy : fy + HD_FACE_RENDER, fx : fx + HD_FACE_RENDER] = sample.image
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=90)
    tb = tight_box(sample.points) + np.array([fx, fy, fx, fy])
    source = (
        f"HD frame {w}x{h} JPEG q90: synthetic validation face (seed 2) rendered at {HD_FACE_RENDER}x"
        f"{HD_FACE_RENDER}, pasted at {HD_AT} on a seeded gradient-and-grain background"
    )
    return buf.getvalue(), _decoded(buf.getvalue()), [round(float(v), 2) for v in tb], source
