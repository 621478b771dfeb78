"""runtime.Landmarker: the in-process facade (decode -> faces -> calibration -> cascade -> pixels)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime.landmarker
from model_store.geometry import BoxCalibration
from model_store.store import ModelStore
from runtime import (
    DecodedImage,
    Detections,
    InvalidBoxesError,
    Landmarker,
    check_boxes,
    create_backend,
    decode_image,
)
from tests.service.images import encode
from tests.service.photos import FRONTAL


def _face_image(seed: int, size: int = 192) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(np.kron(small, np.ones((16, 16, 1), np.uint8))).resize((size, size)))


@pytest.fixture(scope="module")
def landmarker(test_store: Path) -> Landmarker:
    return Landmarker.from_store("test-ibug68", store=test_store, detector=None)


class FixedDetector:
    """Answers one box (in the pixels of the array it is given) and records the min_face it was asked for."""

    name = "fixed"

    def __init__(self, box: list[float]) -> None:
        self.box = box
        self.asked: list[float | None] = []

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        self.asked.append(min_face)
        return Detections(np.array([self.box]), np.array([0.7]))


def test_bytes_arrays_and_decoded_images_give_the_same_faces(landmarker: Landmarker) -> None:
    pixels = _face_image(1)
    box = [[40.0, 30.0, 150.0, 160.0]]
    from_array = landmarker.predict(pixels, box)
    from_png = landmarker.predict(encode(pixels, "PNG"), box)
    from_decoded = landmarker.predict(decode_image(encode(pixels, "PNG"), max_pixels=10**7), box)
    assert len(from_array) == 1 and from_array[0].landmarks.shape == (68, 2)
    assert from_array[0].score is None and from_array[0].pose is None
    np.testing.assert_allclose(from_array[0].box, box[0])
    for other in (from_png, from_decoded):
        np.testing.assert_allclose(other[0].landmarks, from_array[0].landmarks, atol=1e-9)


def test_predict_is_the_cascade_on_the_calibrated_box(test_store: Path) -> None:
    """predict = find_faces -> the source's calibration -> cascade.run -> original pixels."""
    from model_store.manifest import BoxCalibrationSpec
    from tests.service.modelgen import publish_test_model

    root = test_store.parent / "calibrated-store"
    publish_test_model(
        root, "ibug68", calibrations={"fixed": BoxCalibrationSpec(dx=0.1, dy=0.2, sw=1.5, sh=1.5)}
    )
    model = ModelStore(root).resolve("test-ibug68")
    detector = FixedDetector([60.0, 50.0, 140.0, 130.0])
    lm = Landmarker(model, create_backend("onnxruntime", model, max_batch_size=4), detector, refine="never")
    pixels = _face_image(4)
    (face,) = lm.predict(pixels)
    assert face.score == pytest.approx(0.7) and list(face.box) == detector.box
    tight = np.array([[68.0 - 60.0, 66.0 - 60.0, 68.0 + 60.0, 66.0 + 60.0]]) + [40, 40, 40, 40]
    np.testing.assert_allclose(lm.calibration("fixed").apply(np.array([detector.box])), tight)
    expected = lm.landmarks([pixels], tight)[-1][0]
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-9)
    # the "client" source has no calibration in this manifest: identity
    (client,) = lm.predict(pixels, [detector.box])
    np.testing.assert_allclose(client.landmarks, lm.landmarks([pixels], np.array([detector.box]))[-1][0])
    assert np.abs(client.landmarks - face.landmarks).max() > 1.0


def test_refine_runs_the_cascade_again_from_its_own_points_tight_box(test_store: Path) -> None:
    """refine="detector" (the default): a detected face's points are the cascade's second pass from the
    tight box of its first pass's points (upright); the caller's boxes get one pass; "always" gives
    them the second pass too; an unknown setting is refused."""
    model = ModelStore(test_store).resolve("test-ibug68")
    box = [60.0, 50.0, 140.0, 130.0]
    pixels = _face_image(4)

    def landmarker(refine: str) -> Landmarker:
        backend = create_backend("onnxruntime", model, max_batch_size=4)
        return Landmarker(model, backend, FixedDetector(box), refine=refine)

    lm = landmarker("detector")
    assert lm.refine == "detector"
    tight = lm.calibration("fixed").apply(np.array([box]))
    first = lm.landmarks([pixels], tight)[-1]
    np.testing.assert_allclose(Landmarker.refine_boxes(first)[0, :2], first[0].min(axis=0))
    np.testing.assert_allclose(Landmarker.refine_boxes(first)[0, 2:], first[0].max(axis=0))
    second = lm.landmarks([pixels], Landmarker.refine_boxes(first))[-1]
    assert np.abs(second - first).max() > 0.1  # the two passes differ on this image
    np.testing.assert_allclose(lm.predict(pixels)[0].landmarks, second[0], atol=1e-9)
    np.testing.assert_allclose(landmarker("never").predict(pixels)[0].landmarks, first[0], atol=1e-9)
    # the caller's boxes: one pass unless "always"
    client_first = lm.landmarks([pixels], np.array([box]))[-1]
    np.testing.assert_allclose(lm.predict(pixels, [box])[0].landmarks, client_first[0], atol=1e-9)
    client_second = lm.landmarks([pixels], Landmarker.refine_boxes(client_first))[-1]
    np.testing.assert_allclose(
        landmarker("always").predict(pixels, [box])[0].landmarks, client_second[0], atol=1e-9
    )
    with pytest.raises(ValueError, match="refine"):
        landmarker("twice")
    # a call's own refine overrides the landmarker's, both ways; a wrong one is refused before any work
    np.testing.assert_allclose(
        lm.predict(pixels, [box], refine="always")[0].landmarks, client_second[0], atol=1e-9
    )
    np.testing.assert_allclose(lm.predict(pixels, refine="never")[0].landmarks, first[0], atol=1e-9)
    np.testing.assert_allclose(landmarker("never").predict(pixels, refine="detector")[0].landmarks, second[0])
    asked = len(lm.detector.asked)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="refine"):
        lm.predict(pixels, refine="twice")
    assert len(lm.detector.asked) == asked  # type: ignore[union-attr]


def test_a_reduced_jpeg_decode_maps_back_to_original_pixels(test_store: Path) -> None:
    """A 4x larger JPEG is decoded at 1/4 (max_side): boxes, min_face and landmarks are in ORIGINAL pixels."""
    model = ModelStore(test_store).resolve("test-ibug68")
    small = _face_image(6, 256)
    big = np.asarray(Image.fromarray(small).resize((1024, 1024), Image.Resampling.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=95)
    detector = FixedDetector([64.0, 64.0, 192.0, 192.0])  # in the reduced (256 px) array
    lm = Landmarker(model, create_backend("onnxruntime", model, max_batch_size=4), detector, refine="never")
    image = decode_image(buf.getvalue(), max_pixels=10**8, max_side=256)
    assert image.scale_x == pytest.approx(4.0)
    found = lm.find_faces(image, min_face=80.0)
    assert detector.asked == [pytest.approx(20.0)]  # 80 original px are 20 px of the reduced array
    np.testing.assert_allclose(found.boxes, [[256.0, 256.0, 768.0, 768.0]])
    (face,) = lm.predict(image)
    in_reduced = lm.landmarks([image.pixels], lm.tight_boxes(image, found))[-1][0]
    np.testing.assert_allclose(face.landmarks, in_reduced * 4.0, atol=1e-9)


def test_pose_and_max_faces(landmarker: Landmarker, test_store: Path) -> None:
    pixels = _face_image(2)
    boxes = [[40.0, 30.0, 150.0, 160.0], [20.0, 20.0, 120.0, 120.0]]
    faces = landmarker.predict(pixels, boxes, pose=True)
    assert len(faces) == 2 and all(f.pose is None or set(f.pose) >= {"yaw", "pitch", "roll"} for f in faces)
    model = ModelStore(test_store).resolve("test-ibug68")

    class Two(FixedDetector):
        def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
            return Detections(np.array(boxes), np.array([0.9, 0.5]))

    lm = Landmarker(model, landmarker.backend, Two([0, 0, 1, 1]))
    assert [f.score for f in lm.predict(pixels, max_faces=1)] == [pytest.approx(0.9)]
    assert len(lm.predict(pixels)) == 2


def test_boxes_are_checked(landmarker: Landmarker) -> None:
    pixels = _face_image(3)
    image = DecodedImage(pixels=pixels, width=192, height=192, format="array", mode="RGB", orientation=1)
    for bad, match in [
        ([[1, 2, 3]], "list of"),
        ([[10, 10, 5, 50]], "inverted"),
        ([[0, 0, float("nan"), 9]], "finite"),
        ("no", "numbers"),
    ]:
        with pytest.raises(InvalidBoxesError, match=match):
            check_boxes(bad)
    with pytest.raises(InvalidBoxesError, match="outside the 192x192 image"):
        landmarker.predict(pixels, [[200, 200, 300, 300]])
    with pytest.raises(InvalidBoxesError, match="further than"):
        check_boxes([[-400, 10, 50, 60]], image)
    assert check_boxes([[-10, -10, 50, 60]], image).shape == (1, 4)  # a face at the edge may reach past it
    assert landmarker.predict(pixels, []) == []
    with pytest.raises(ValueError, match="no face detector"):
        landmarker.predict(pixels)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        landmarker.predict(np.zeros((8, 8)), [[0, 0, 4, 4]])


def test_default_model_is_the_schemes_default_or_the_stores_first(test_store: Path) -> None:
    store = ModelStore(test_store)
    assert Landmarker.default_model(store, "aflw19") == "test-aflw19"  # no cnn67-aflw19 in this store
    with pytest.raises(ValueError, match="no model for scheme"):
        Landmarker.default_model(ModelStore(test_store.parent / "empty-store"), "ibug68")
    lm = Landmarker.from_store(scheme="aflw19", store=test_store, detector=None)
    assert (lm.name, lm.scheme, lm.detector) == ("test-aflw19", "aflw19", None)


def test_the_runtime_never_imports_torch_service_or_train(photos: Path) -> None:
    """The default model on a real photo, dlib HOG and ONNX Runtime, in a fresh interpreter."""
    code = f"""
import sys
from runtime import Landmarker
faces = Landmarker.from_store().predict(open({str(photos / FRONTAL[0])!r}, "rb").read(), pose=True)
assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2) and faces[0].pose is not None, faces
top = {{m.split(".")[0] for m in sys.modules}}
print("IMPORTED", sorted(top & {{"torch", "service", "train", "fastapi"}}))
"""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout, proc.stdout


class EyesDetector(FixedDetector):
    """A fixed box with eye keypoints on a line turned ``degrees``, and its own calibration (per scheme)."""

    name = "eyes"

    def __init__(self, box: list[float], degrees: float, own: dict[str, float] | None = None) -> None:
        super().__init__(box)
        self.degrees, self.own = degrees, own

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        t = np.radians(self.degrees)
        cx, cy = (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2
        eyes = np.array(
            [[cx - 20 * np.cos(t), cy - 20 * np.sin(t)], [cx + 20 * np.cos(t), cy + 20 * np.sin(t)]]
        )
        return Detections(np.array([self.box]), np.array([0.9]), keypoints=eyes[None])

    def calibration(self, scheme: str) -> BoxCalibration | None:
        return BoxCalibration(**self.own) if self.own is not None and scheme == "ibug68" else None


def test_the_detectors_eyes_turn_stage_one_and_its_own_calibration_fills_the_manifests_gap(
    test_store: Path,
) -> None:
    box = [40.0, 30.0, 150.0, 160.0]
    own = {"dx": 0.0, "dy": 0.1, "sw": 0.8, "sh": 0.7}
    pixels = _face_image(3)
    lm = Landmarker.from_store(
        "test-ibug68", store=test_store, detector=EyesDetector(box, 30.0, own), refine="never"
    )
    found = lm.find_faces(DecodedImage(pixels, 192, 192, "array", "RGB", 1))
    assert found.angles is not None and np.degrees(found.angles[0]) == pytest.approx(30.0)
    # the manifest has no "eyes" calibration: the detector's own maps its box
    assert "eyes" in lm.calibration_names and lm.calibration("eyes") == BoxCalibration(**own)
    tight = BoxCalibration(**own).apply(np.array([box]))
    turned = lm.cascade.run([pixels], tight, angles=found.angles)[-1]
    upright = lm.cascade.run([pixels], tight)[-1]
    assert not np.allclose(turned, upright)  # the roll changes stage 1's crop
    np.testing.assert_allclose(lm.predict(pixels)[0].landmarks, turned[0], atol=1e-9)
    # no own calibration and no manifest entry: the identity
    plain = Landmarker.from_store("test-ibug68", store=test_store, detector=EyesDetector(box, 0.0))
    assert "eyes" not in plain.calibration_names and plain.calibration("eyes") == BoxCalibration()
    assert plain.find_faces(DecodedImage(pixels, 192, 192, "array", "RGB", 1)).angles == pytest.approx([0.0])


def test_decode_reduction_keeps_every_stage_crop_at_full_resolution(landmarker: Landmarker) -> None:
    """test-ibug68: stages of 64 and 128 px, crop rule scale 1.25 (the defaults'). The stage-2 crop
    (128 px over 1.25 * 0.8 of the face) decides: a face of 1024 px allows 1/8, 512 px 1/4, 100 px none."""
    g = landmarker.cascade.geometry.stages
    assert [s.input_size for s in g] == [64, 128] and all(s.crop_rule.scale == 1.25 for s in g)
    for side, reduce in [(1100, 8), (1024, 8), (1023, 4), (512, 4), (300, 2), (256, 2), (255, 1), (100, 1)]:
        assert landmarker.decode_reduction([[10.0, 10.0, 10.0 + side, 10.0 + side * 0.8]]) == reduce, side
    # the smallest face decides; none: no reduction
    assert landmarker.decode_reduction([[0, 0, 1100, 1100], [0, 0, 300, 300]]) == 2
    assert landmarker.decode_reduction(np.zeros((0, 4))) == 1


@pytest.mark.parametrize("precision", ["float", "int8"])
def test_decode_reduction_follows_the_served_models_crops(landmarker: Landmarker, precision: str) -> None:
    """The defaults (face-api 4.1.0, float or its int8 variant): two 112-px stages, so a 448-px face
    allows 1/4 where test-ibug68's 128-px stage 2 allows 1/2; the benchmark's HD frame (a 358 x 342
    client box) decodes at 1/2 (1/4 measured 0.17 NME points worse: docs/quantize_faceapi_4.1.0.md)."""
    served = Landmarker.from_store("faceapi-ibug68", version="4.1.0", detector=None, precision=precision)
    try:
        assert served.model.name == "faceapi-ibug68" + ("-int8" if precision == "int8" else "")
        assert [s.input_size for s in served.cascade.geometry.stages] == [112, 112]
        face = [[10.0, 10.0, 458.0, 400.0]]  # 448 px wide
        assert (served.decode_reduction(face), landmarker.decode_reduction(face)) == (4, 2)
        assert served.decode_reduction([[10.0, 10.0, 457.0, 400.0]]) == 2
        assert served.decode_reduction([[1275.44, 406.05, 1633.52, 748.38]]) == 2
    finally:
        served.close()


def test_client_boxes_decode_reduced_with_landmarks_in_original_pixels(
    landmarker: Landmarker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2048-px JPEG with a 1200-px face: decoded at 1/8 (256 px, 8x fewer rows and columns to
    decode), landmarks in original pixels and where the full decode puts them (to well under the
    crop's pixel at the reduced scale)."""
    small = _face_image(7, 256)
    big = np.asarray(Image.fromarray(small).resize((2048, 2048), Image.Resampling.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=95)
    box = [[400.0, 420.0, 1600.0, 1620.0]]
    assert landmarker.decode_reduction(box) == 8
    decoded: list[DecodedImage] = []

    def recording_decode(data: bytes, **kw: object) -> DecodedImage:
        decoded.append(decode_image(data, **kw))  # type: ignore[arg-type]
        return decoded[-1]

    monkeypatch.setattr(runtime.landmarker, "decode_image", recording_decode)
    (reduced,) = landmarker.predict(buf.getvalue(), box)
    assert [d.pixels.shape for d in decoded] == [(256, 256, 3)] and decoded[0].scale_x == 8.0
    (whole,) = landmarker.predict(decode_image(buf.getvalue(), max_pixels=10**8, max_side=None), box)
    np.testing.assert_allclose(reduced.box, box[0])
    # stage 2 samples the face at 128 px over 1500 original px: one crop pixel is ~12 original px
    assert np.abs(reduced.landmarks - whole.landmarks).max() < 6.0
    assert reduced.landmarks.min() > 300 and reduced.landmarks.max() < 1700  # original pixels, not 1/8


class ReducingDetector:
    """Finds one face given in ORIGINAL pixels (answered in the pixels of the array it is given) and
    asks for JPEGs reduced by ``reduce``; records the shapes it was given."""

    name = "reducing"

    def __init__(self, box: list[float], width: int, reduce: int) -> None:
        self.box, self.width, self.reduce = np.array([box]), width, reduce
        self.shapes: list[tuple[int, ...]] = []

    def decode_reduction(self, width: int, height: int, min_face: float | None = None) -> int:
        return self.reduce

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        self.shapes.append(image.shape)
        return Detections(self.box * image.shape[1] / self.width, np.array([0.8]))


@pytest.mark.parametrize("side", [600.0, 60.0])
def test_jpegs_are_detected_at_the_detectors_size_and_cropped_from_enough_pixels(
    landmarker: Landmarker, side: float
) -> None:
    """A 1600x1200 JPEG, a detector that wants it at 1/4: it sees 400x300. A face of 600 px is cropped
    from that decode; one of 60 px needs every pixel: the JPEG is decoded again, at full size, and the
    landmarks are those the caller's box gives (the same decode)."""
    pixels = np.asarray(Image.fromarray(_face_image(4, 400)).resize((1600, 1200)))
    data = encode(pixels, "JPEG", quality=92)
    box = [500.0, 300.0, 500.0 + side, 300.0 + side]
    det = ReducingDetector(box, 1600, 4)
    lm = Landmarker(landmarker.model, landmarker.backend, det, refine="never")  # one pass, as the box's
    assert lm.detect_reduction(data) == 4
    assert lm.detect_reduction(data, max_side=200) == 8  # never finer than max_side's rule
    assert lm.detect_reduction(encode(pixels, "PNG")) is None  # not a JPEG: decoded whole
    # the first decode of a request (the service's and predict's): boxes decide, else the detector's size
    assert lm.first_reduction(data, [box]) == lm.decode_reduction([box])
    assert lm.first_reduction(data, None) == 4 and lm.first_reduction(data, None, max_side=200) == 8
    assert lm.first_reduction(pixels, None) is None  # decoded already
    (face,) = lm.predict(data)
    assert det.shapes == [(300, 400, 3)]
    np.testing.assert_allclose(face.box, box, atol=1e-9)
    expected = lm.decode_reduction([box])
    assert (expected >= 4) == (side == 600.0)
    (given,) = Landmarker(landmarker.model, landmarker.backend, None).predict(data, [box])
    if side == 60.0:  # decoded again at the reduction the client's box gets
        np.testing.assert_allclose(face.landmarks, given.landmarks, atol=1e-6)
    decoded = decode_image(data, max_pixels=10**8, reduce=4)
    found = lm.find_faces(decoded)
    assert (lm.crop_reduction(decoded, found) is None) == (side == 600.0)


def test_a_landmarker_is_a_context_manager_that_closes_its_backend(test_store: Path) -> None:
    closed: list[str] = []

    def opened(label: str) -> Landmarker:
        lm = Landmarker.from_store("test-ibug68", store=test_store, detector=None)
        close = lm.backend.close

        def counted() -> None:
            closed.append(label)
            close()

        lm.backend.close = counted  # type: ignore[method-assign]
        return lm

    with opened("ok") as lm:
        faces = lm.predict(_face_image(3), [[40, 40, 150, 150]])
        assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2) and closed == []
    assert closed == ["ok"]
    with pytest.raises(RuntimeError, match="the block failed"), opened("failed"):
        raise RuntimeError("the block failed")
    assert closed == ["ok", "failed"]  # closed on the way out of a failing block too
