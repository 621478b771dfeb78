"""The request path (service.landmarking) and the runtime cascade it batches: crops, stage chaining,
calibration and the mapping back to image pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.store import ModelStore
from runtime import Cascade, Landmarker
from runtime.backends import create_backend


@pytest.fixture(scope="module")
def cascade(test_store: Path) -> Cascade:
    model = ModelStore(test_store).resolve("test-ibug68")
    return Landmarker(model, create_backend("onnxruntime", model, max_batch_size=8)).cascade


def _face_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))  # [192, 192, 3], smooth enough to move with


def test_landmarks_move_with_the_image(cascade: Cascade) -> None:
    image = _face_image(1)
    box = np.array([[40.0, 30.0, 150.0, 160.0]])
    (pts,) = cascade.run_batch(cascade.prepare(image, box))
    assert pts.shape == (68, 2)
    shifted = np.zeros((192 + 37, 192 + 21, 3), np.uint8)
    shifted[37:, 21:] = image  # content moved by (+21, +37) pixels
    (moved,) = cascade.run_batch(cascade.prepare(shifted, box + [21, 37, 21, 37]))
    np.testing.assert_allclose(moved, pts + [21, 37], atol=1e-3)


def test_landmarks_follow_the_box_scale_and_stay_in_the_crop(cascade: Cascade) -> None:
    image = _face_image(2)
    big = np.kron(image, np.ones((2, 2, 1), dtype=np.uint8))  # the same picture at twice the size
    box = np.array([[40.0, 30.0, 150.0, 160.0]])
    (pts,) = cascade.run_batch(cascade.prepare(image, box))
    (pts2,) = cascade.run_batch(cascade.prepare(big, box * 2))
    np.testing.assert_allclose(pts2, pts * 2, atol=0.05 * 130)  # bilinear sampling differs slightly
    side = 1.25 * 130  # the crop of the default rule around the box
    centre = np.array([95.0, 95.0])
    assert (np.abs(pts - centre) <= side / 2).all()


def test_a_batch_gives_each_face_its_own_answer(cascade: Cascade) -> None:
    images = [_face_image(s) for s in range(5)]
    boxes = [np.array([[10.0 + 7 * i, 20.0, 120.0 + 7 * i, 150.0]]) for i in range(5)]
    jobs = [job for img, b in zip(images, boxes, strict=True) for job in cascade.prepare(img, b)]
    together = cascade.run_batch(jobs)
    alone = [cascade.run_batch([job])[0] for job in jobs]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert not np.allclose(together[0], together[1], atol=1.0)  # different faces, different answers


def test_detector_boxes_go_through_the_manifest_calibration(tmp_path: Path) -> None:
    """Detector boxes go through box_calibrations[detector.name] before cropping; client boxes "client"."""
    import asyncio

    from model_store.manifest import BoxCalibrationSpec
    from runtime.detectors import DETECTORS, Detections, register_detector
    from service.landmarking import LandmarkRequest, LandmarkService
    from service.settings import Settings
    from tests.service.images import encode
    from tests.service.modelgen import publish_test_model

    cal = BoxCalibrationSpec(dx=0.1, dy=0.2, sw=1.5, sh=1.5)
    publish_test_model(tmp_path, "ibug68", calibrations={"fake": cal})
    box = [60.0, 50.0, 140.0, 130.0]

    @register_detector("fake")
    class FakeDetector:
        name = "fake"

        def __init__(self, **options: object) -> None:
            pass

        def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
            return Detections(np.array([box]), np.array([0.9]))

    async def main() -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
        service = LandmarkService(Settings(model_root=tmp_path, detector="fake", refine="never"))
        await service.start(background=False)
        data = encode(_face_image(4), "PNG")
        detected = await service.predict(LandmarkRequest(data))
        client = await service.predict(LandmarkRequest(data, boxes=[box]))
        await service.stop()
        return (
            np.asarray(detected.faces[0].landmarks),
            np.asarray(client.faces[0].landmarks),
            detected.to_dict(),
        )

    try:
        via_detector, via_client, body = asyncio.run(main())
    finally:
        DETECTORS.pop("fake")
    assert body["box_source"] == "fake" and body["faces"][0]["box"] == box  # type: ignore[index]
    assert body["faces"][0]["detection_score"] == pytest.approx(0.9)  # type: ignore[index]
    # The test model's landmarks sit at (nearly) fixed places in the crop, so they follow the box: the
    # calibrated box has its centre moved by (0.1 w, 0.2 h) = (8, 16) and is 1.5 times as large.
    centre, calibrated_centre = np.array([100.0, 90.0]), np.array([108.0, 106.0])
    expected = calibrated_centre + 1.5 * (via_client.mean(axis=0) - centre)
    np.testing.assert_allclose(via_detector.mean(axis=0), expected, atol=1.5)
    spread = np.ptp(via_detector, axis=0) / np.ptp(via_client, axis=0)
    np.testing.assert_allclose(spread, [1.5, 1.5], atol=0.08)


def _serve(root: Path, data: bytes, boxes: list[list[float]]) -> np.ndarray:
    """Landmarks [N, K, 2] from LandmarkService.predict (decode, client boxes, batcher, cascade)."""
    import asyncio

    from service.landmarking import LandmarkRequest, LandmarkService
    from service.settings import Settings

    async def main() -> np.ndarray:
        # float: the evaluation path runs the float model (on a VNNI CPU auto would pick its int8 variant)
        service = LandmarkService(
            Settings(model_root=root, detector="none", models=["cnn67-ibug68"], precision="float")
        )
        await service.start(background=False)
        try:
            result = await service.predict(LandmarkRequest(data, boxes=boxes))
        finally:
            await service.stop()
        return np.array([f.landmarks for f in result.faces])

    return asyncio.run(main())


def test_service_equals_the_evaluation_path_on_the_default_model() -> None:
    """The service's answer on the default model is the evaluation path's final stage, not stage 1's.

    Same image (a lossless PNG of a synthetic face), same tight box: ``LandmarkService.predict`` and
    ``train.export.evaluate.cascade_predict`` (what the published NME figures come from) must agree to
    the response's rounding, and differ clearly from the stage-1 points (so a service that skipped
    stage 2 fails here).
    """
    from model_store.geometry import tight_box
    from model_store.store import default_root
    from tests.service.images import encode
    from train.export.evaluate import StageGeometry, cascade_predict, load_synthetic

    model = ModelStore(default_root()).resolve("cnn67-ibug68")  # the default: newest version
    m = model.manifest
    samples = load_synthetic({**m.evaluation["dataset"], "limit": 2}, m.scheme)
    backend = create_backend("onnxruntime", model, max_batch_size=8)
    try:
        for sample in samples:
            box = tight_box(sample.points)[None]  # (1, 4): the "client" box, identity calibration
            stage1, final = cascade_predict(
                backend.run, [StageGeometry.from_spec(s) for s in m.stages], [sample.image], box, m.scheme
            )
            served = _serve(default_root(), encode(sample.image, "PNG"), box.tolist())
            assert served.shape == final.shape == (1, 68, 2)
            np.testing.assert_allclose(served, final, atol=0.02)  # responses round to 0.01 px
            assert np.abs(served - stage1).mean() > 0.3  # stage 2 moved the points: it ran
    finally:
        backend.close()


def _predict(
    data: bytes, decode_max_side: int, boxes: list[list[float]] | None = None, detector: str = "dlib_hog"
) -> Any:
    import asyncio

    from service.landmarking import LandmarkRequest, LandmarkService
    from service.settings import Settings

    async def main() -> Any:
        service = LandmarkService(Settings(decode_max_side=decode_max_side, detector=detector))
        await service.start(background=False)
        try:
            return await service.predict(LandmarkRequest(data, boxes=boxes, deadline_ms=60_000))
        finally:
            await service.stop()

    return asyncio.run(main())


def test_a_reduced_jpeg_decode_answers_in_original_pixels(photos: Path) -> None:
    """A JPEG decoded at 1/2 scale: the detector's boxes and the landmarks (detected or from a client
    box) come back in the original pixel grid, where a full decode puts them. dlib's HOG decodes in
    full for detection (its window needs every pixel), so WINGMARK_DECODE_MAX_SIDE decides; the default
    detector decodes this photo at 1/2 for detection whatever it, and its landmarks land where dlib's do."""
    from PIL import Image

    from tests.service.images import encode

    photo = Image.open(photos / "audrey.jpg").convert("RGB")
    k = 1600 / max(photo.size)
    big = np.asarray(
        photo.resize((round(photo.width * k), round(photo.height * k)), Image.Resampling.LANCZOS)
    )
    data = encode(big, "JPEG", quality=95)
    full, reduced = _predict(data, 4096), _predict(data, 800)
    assert reduced.image.scale_x == pytest.approx(2.0, rel=0.01)  # it really was decoded at 1/2
    assert full.image.scale_x == 1.0 and (reduced.image.width, reduced.image.height) == big.shape[1::-1]
    assert len(full.faces) == len(reduced.faces) == 1
    f, r = full.faces[0], reduced.faces[0]
    side = f.box[2] - f.box[0]
    assert np.abs(np.subtract(r.box, f.box)).max() < 0.08 * side, (r.box, f.box)
    assert np.abs(np.subtract(r.landmarks, f.landmarks)).mean() < 0.03 * side
    client_full, client_reduced = _predict(data, 4096, [f.box]), _predict(data, 800, [f.box])
    diff = np.subtract(client_reduced.faces[0].landmarks, client_full.faces[0].landmarks)
    assert np.abs(diff).mean() < 0.03 * side
    from service.settings import Settings

    own = _predict(data, 4096, detector=Settings().detector)
    assert own.image.scale_x == pytest.approx(2.0, rel=0.01) and len(own.faces) == 1
    assert np.abs(np.subtract(own.faces[0].landmarks, f.landmarks)).mean() < 0.03 * side
