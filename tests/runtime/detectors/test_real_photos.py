"""The CNN detectors on the real photos of the real-face cache (``wingmark data real``), against the
teachers' faces: a large face in a wide photo is found with no false positive; in the group photos
(dlib's examples/faces, face-api's demo/) every face of at least 32 px that the teachers label is found.

The cache is read from ``$WINGMARK_REAL_CACHE`` (default ``<repo>/cache/real``); without it these tests
skip, CI included: CI has no real-face cache (it is built by ``wingmark data real``, photos of people
stay out of git), as tests/train/data/test_scan.py skips without its sdist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.detectors import box_iou, create_detector
from tools.studies.detect_bench import RealImage, match_faces, real_images

DEFAULT = "ssd_blazeface"  # the service's default detector (service.settings)
GROUP_PHOTOS = (  # dlib 19.24 examples/faces and face-api 1.7.15 demo/ (the group photos in the cache)
    "images/dlib/2007_007763.jpg",
    "images/dlib/2008_001009.jpg",
    "images/dlib/2008_001322.jpg",
    "images/dlib/2008_002079.jpg",
    "images/dlib/2008_002470.jpg",
    "images/dlib/2008_002506.jpg",
    "images/dlib/2008_007676.jpg",
    "images/dlib/2009_004587.jpg",
    "images/dlib/bald_guys.jpg",
    "images/face-api/sample1.jpg",
    "images/face-api/sample3.jpg",
    "images/face-api/sample4.jpg",
    "images/face-api/sample5.jpg",
    "images/face-api/sample6.jpg",
)
LARGE_FACE = "images/menpo3d/james.jpg"  # 2400x1600, the face about 640 px


@pytest.fixture(scope="module")
def cache() -> Path:
    from tools.studies.real_bench import default_cache

    root = default_cache()
    if not (root / "manifest.json").is_file():
        pytest.skip(f"no real-face cache at {root} (wingmark data real; or set WINGMARK_REAL_CACHE)")
    return root


@pytest.fixture(scope="module")
def stills(cache: Path) -> dict[str, RealImage]:
    return {i.rel: i for i in real_images(cache, max_frames=0)}


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_a_large_face_in_a_wide_photo_is_found_with_no_false_positive(
    cache: Path, stills: dict[str, RealImage]
) -> None:
    item = stills[LARGE_FACE]
    img = _rgb(cache / LARGE_FACE)
    assert max(img.shape[:2]) >= 1600
    sides = np.sqrt((item.labelled[:, 2] - item.labelled[:, 0]) * (item.labelled[:, 3] - item.labelled[:, 1]))
    assert len(item.labelled) >= 1 and sides.max() >= 300
    det = create_detector(DEFAULT)
    assert det is not None
    faces = det.detect(img, min_face=80)  # the service's default detect_min_face
    m = match_faces(faces.boxes, item.labelled)
    assert (m >= 0).all(), "a labelled face was missed"
    extra = [i for i in range(len(faces.boxes)) if i not in set(m.tolist())]
    if extra and len(item.known):  # a face dlib found but the teachers did not label is not false
        extra = [i for i in extra if box_iou(faces.boxes[i : i + 1], item.known).max() < 0.3]
    assert extra == [], f"false positives: {faces.boxes[extra]}"


@pytest.mark.parametrize("rel", GROUP_PHOTOS)
def test_group_photos_every_labelled_face_of_32px_is_found(
    cache: Path, stills: dict[str, RealImage], rel: str
) -> None:
    item = stills[rel]
    sides = np.sqrt((item.labelled[:, 2] - item.labelled[:, 0]) * (item.labelled[:, 3] - item.labelled[:, 1]))
    truth = item.labelled[sides >= 32]
    if len(truth) == 0:
        pytest.skip(f"the teachers label no face in {rel}")
    det = create_detector(DEFAULT)
    assert det is not None
    faces = det.detect(_rgb(cache / rel), min_face=32)
    m = match_faces(faces.boxes, truth)
    assert (m >= 0).all(), f"{rel}: {(m < 0).sum()} of {len(truth)} labelled faces missed: {truth[m < 0]}"
