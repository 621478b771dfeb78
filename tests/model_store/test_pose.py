"""Head pose from landmarks (model_store.pose): conventions, exact recovery, synthetic faces of known pose."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.meanshape import MEAN_SHAPE_19, MEAN_SHAPE_68, aflw19_from_68
from model_store.pose import (
    default_focal,
    estimate_pose,
    euler_from_rotation,
    model_points,
    project_points,
    rotation_from_euler,
)

POSES = [(0, 0, 0), (35, -12, 8), (-58, 20, -15), (60, 0, 0), (-20, -35, 30), (10, 25, -40)]


@pytest.mark.parametrize(("yaw", "pitch", "roll"), POSES)
def test_euler_round_trip(yaw: float, pitch: float, roll: float) -> None:
    r = rotation_from_euler(yaw, pitch, roll)
    assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
    assert euler_from_rotation(r) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def test_conventions_match_the_synthetic_renderer() -> None:
    face3d = pytest.importorskip("train.data.face3d")
    for pose in POSES:
        assert np.allclose(rotation_from_euler(*pose), face3d.rotation_matrix(*pose))
    # The signs, on the mean face seen by the camera (y down): yaw > 0 moves the nose tip to the image's
    # right, pitch > 0 moves it up, roll > 0 turns the eye line clockwise on screen.
    nose, eyes = MEAN_SHAPE_68[30], MEAN_SHAPE_68[[36, 45]]
    assert (rotation_from_euler(30, 0, 0) @ nose)[0] > nose[0]
    assert (rotation_from_euler(0, 30, 0) @ nose)[1] < nose[1]
    d = (rotation_from_euler(0, 0, 20) @ (eyes[1] - eyes[0]))[:2]
    assert np.degrees(np.arctan2(d[1], d[0])) == pytest.approx(20.0, abs=1.5)


def test_aflw19_model_is_the_renderers() -> None:
    face3d = pytest.importorskip("train.data.face3d")
    assert np.allclose(MEAN_SHAPE_19, face3d.aflw19_from_68(face3d.head_model().vertices[:68]))
    assert np.allclose(model_points("aflw19"), aflw19_from_68(MEAN_SHAPE_68))
    with pytest.raises(ValueError, match="scheme"):
        model_points("wflw98")


@pytest.mark.parametrize("scheme", ["ibug68", "aflw19"])
@pytest.mark.parametrize(("yaw", "pitch", "roll"), POSES)
def test_exact_projections_are_recovered(scheme: str, yaw: float, pitch: float, roll: float) -> None:
    """The mean face itself, projected with the solver's camera: the pose comes back exactly."""
    w, h = 640, 480
    f, centre = default_focal(w, h), np.array([w / 2, h / 2])
    r, t = rotation_from_euler(yaw, pitch, roll), np.array([25.0, -10.0, 6.0])
    uv = project_points(model_points(scheme), r, t, f, centre)
    pose = estimate_pose(uv, scheme, w, h)
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=1e-3)
    assert np.allclose(pose.translation, t, atol=1e-3) and pose.reprojection_error < 1e-3
    assert pose.to_dict()["yaw"] == pytest.approx(yaw, abs=0.01)


@pytest.mark.parametrize("factor", [0.5, 3.0, 30.0])
def test_a_wrong_focal_length_costs_little(factor: float) -> None:
    """A camera with ``factor`` times the assumed focal length (30: near-orthographic), the face 100 px
    wide in a 256 px image: the solver, assuming f = 256, still finds the pose within 6 degrees (measured:
    yaw 40 reads 44.6, 36.5 and 34.8; pitch and roll are within 2.5)."""
    f = factor * 256
    r = rotation_from_euler(40, -15, 10)
    uv = project_points(MEAN_SHAPE_68, r, np.array([0.1, 0.0, f * 1.25 / 100]), f, np.array([128.0, 128.0]))
    pose = estimate_pose(uv, "ibug68", 256, 256)
    assert pose.yaw == pytest.approx(40, abs=6.0)
    assert (pose.pitch, pose.roll) == pytest.approx((-15, 10), abs=3.0)


def test_synthetic_faces_of_known_pose() -> None:
    """The renderer's exact landmarks (identity, expression and perspective vary; the solver knows only the
    mean face and assumes f = max(w, h)): mean absolute error under 5 degrees within +-60 degrees of yaw."""
    render = pytest.importorskip("train.data.render")
    errors = []
    for i in range(40):
        rng = np.random.default_rng([12, i])
        yaw, pitch, roll = rng.uniform(-60, 60), rng.uniform(-25, 25), rng.uniform(-25, 25)
        face = render.render_face(rng, 256, yaw, pitch, roll, geometry_only=True)
        for scheme, pts in (("ibug68", face.points68), ("aflw19", face.points19)):
            pose = estimate_pose(pts, scheme, 256, 256)
            errors.append([pose.yaw - yaw, pose.pitch - pitch, pose.roll - roll])
    mae = np.abs(np.asarray(errors)).reshape(40, 2, 3).mean(axis=0)  # [scheme, angle]
    assert mae[:, :2].max() < 5.0, mae
    assert mae[:, 2].max() < 2.0, mae
    assert np.abs(np.asarray(errors)).max() < 20, mae


def test_bad_landmarks() -> None:
    with pytest.raises(ValueError, match=r"\[68, 2\]"):
        estimate_pose(np.zeros((19, 2)), "ibug68", 100, 100)
    with pytest.raises(ValueError, match="finite"):
        estimate_pose(np.full((68, 2), np.nan), "ibug68", 100, 100)
    pose = estimate_pose(np.full((68, 2), 50.0), "ibug68", 100, 100)  # degenerate: no crash, finite
    assert np.isfinite([pose.yaw, pose.pitch, pose.roll]).all()


def test_zero_weights_ignore_bad_points() -> None:
    """Points given weight 0 (e.g. occluded) do not move the pose; with weight 1 the same points do."""
    r, t = rotation_from_euler(-25, 10, 5), np.array([0.0, 0.0, 8.0])
    uv = project_points(MEAN_SHAPE_68, r, t, 256.0, np.array([128.0, 128.0]))
    uv[:17] += np.random.default_rng(0).normal(0, 15, (17, 2))  # a badly wrong jaw
    w = np.r_[np.zeros(17), np.ones(51)]
    weighted = estimate_pose(uv, "ibug68", 256, 256, weights=w)
    assert (weighted.yaw, weighted.pitch, weighted.roll) == pytest.approx((-25, 10, 5), abs=1e-3)
    plain = estimate_pose(uv, "ibug68", 256, 256)
    assert max(abs(plain.yaw + 25), abs(plain.pitch - 10), abs(plain.roll - 5)) > 0.5
    with pytest.raises(ValueError, match="weights"):
        estimate_pose(uv, "ibug68", 256, 256, weights=np.r_[np.ones(5), np.zeros(63)])
