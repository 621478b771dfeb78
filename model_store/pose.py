"""Head pose (yaw, pitch, roll) from 2-D landmarks: a perspective-n-point solve against the 3-D mean face.

numpy only (the serving path uses it). The 2-D landmarks of one face are matched to the 3-D mean shape
of their scheme (:mod:`model_store.meanshape`; for aflw19 its 19 points derived from the 68) under a
pinhole camera whose focal length comes from the image size (:func:`default_focal`) and whose
principal point is the image centre. The solve starts from a scaled-orthographic fit (an affine
camera by least squares, its rows made orthonormal) and refines rotation and translation with
Levenberg-Marquardt on the reprojection error in pixels.

Conventions (the synthetic renderer's, ``train.data.face3d.rotation_matrix``)
--------------------------------------------------------------------------
Head axes as seen in a frontal image: x to the image's right (the subject's left), y down, z out of
the face towards the camera. Angles in degrees:

- yaw > 0 turns the nose towards the image's right (the subject's left),
- pitch > 0 lifts the nose (the face looks up),
- roll > 0 tilts the eye line clockwise on screen (its angle ``atan2(dy, dx)`` grows by roll).

The head's rotation is ``R = R_roll @ R_pitch @ R_yaw`` applied to column vectors (yaw about y first,
then pitch about x, then roll about the viewing axis z). A frontal, upright face has all three at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model_store.meanshape import MEAN_SHAPE_19, MEAN_SHAPE_68

__all__ = [
    "HeadPose",
    "default_focal",
    "estimate_pose",
    "euler_from_rotation",
    "model_points",
    "project_points",
    "rotation_from_euler",
]

# Focal length in pixels per pixel of the image's longer side: f = FOCAL_FACTOR * max(w, h), about a
# 50 mm lens on a full-frame camera for a landscape photo (a horizontal field of view of ~53 degrees).
FOCAL_FACTOR = 1.0
# The flip between the head frame (z towards the camera) and the camera frame (z away from it).
_FLIP = np.diag([1.0, 1.0, -1.0])


@dataclass(frozen=True)
class HeadPose:
    """One face's pose.

    yaw, pitch, roll: degrees (conventions in the module docstring).
    rotation: [3, 3] head frame -> head frame rotated (``rotation_from_euler(yaw, pitch, roll)``).
    translation: [3] the mean face's origin in camera coordinates (x right, y down, z forward), in
        mean-shape units (the jaw spans about 1.25 units).
    focal: the focal length in pixels used; reprojection_error: RMS distance in pixels between the
        landmarks and the fitted mean face's projection.
    """

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    reprojection_error: float

    def to_dict(self) -> dict[str, float]:
        return {
            "yaw": round(self.yaw, 2),
            "pitch": round(self.pitch, 2),
            "roll": round(self.roll, 2),
            "reprojection_error": round(self.reprojection_error, 3),
        }


def model_points(scheme: str) -> np.ndarray:
    """[K, 3] the 3-D mean face in ``scheme``'s point order (head frame, mean-shape units)."""
    if scheme == "ibug68":
        return MEAN_SHAPE_68
    if scheme == "aflw19":
        return MEAN_SHAPE_19
    raise ValueError(f"no 3-D mean face for scheme {scheme!r}")


def default_focal(width: float, height: float) -> float:
    """Focal length in pixels assumed for an image of ``width`` x ``height`` pixels."""
    return FOCAL_FACTOR * float(max(width, height))


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] ``R_roll @ R_pitch @ R_yaw`` from degrees (the renderer's ``rotation_matrix``)."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return np.asarray(rz @ rx @ ry)


def euler_from_rotation(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a [3, 3] rotation; the inverse of :func:`rotation_from_euler`.

    Pitch is taken in [-90, 90]; yaw and roll in (-180, 180].
    """
    r = np.asarray(r, dtype=np.float64)
    pitch = math.asin(float(np.clip(r[2, 1], -1.0, 1.0)))
    yaw = math.atan2(-r[2, 0], r[2, 2])
    roll = math.atan2(-r[0, 1], r[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def project_points(
    model: np.ndarray, rotation: np.ndarray, translation: np.ndarray, focal: float, centre: np.ndarray
) -> np.ndarray:
    """[K, 3] head-frame points -> [K, 2] image pixels, for a head rotated by ``rotation`` (head frame)
    and placed at ``translation`` (camera frame), seen by a pinhole camera (``focal``, ``centre``)."""
    q = (np.asarray(model) @ (_FLIP @ rotation).T) + translation  # [K, 3] camera frame
    return np.asarray(focal * q[:, :2] / q[:, 2:3] + centre)


def _skew(v: np.ndarray) -> np.ndarray:
    """[K, 3] -> [K, 3, 3] cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack(
        [np.stack([z, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], z, -v[:, 0]], 1),
         np.stack([-v[:, 1], v[:, 0], z], 1)],
        axis=1,
    )  # fmt: skip


def _exp_so3(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vector [3] -> [3, 3]."""
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = w / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.asarray(np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx)


def _orthographic_init(
    model: np.ndarray, uv: np.ndarray, focal: float, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scaled-orthographic start: camera-frame rotation [3, 3] and translation [3].

    model [K, 3] camera-frame-oriented points (z away from the camera), uv [K, 2] centred pixels,
    w [K] point weights.
    """
    wn = w / w.sum()
    model_mean, uv_mean = wn @ model, wn @ uv
    sw = np.sqrt(w)[:, None]
    a, *_ = np.linalg.lstsq(sw * (model - model_mean), sw * (uv - uv_mean), rcond=None)  # uv ~ mc @ a [3, 2]
    u, s, vt = np.linalg.svd(a.T, full_matrices=False)  # a.T [2, 3] = s * (first two rows of R)
    rows = u @ vt  # the nearest pair of orthonormal rows
    r = np.vstack([rows, np.cross(rows[0], rows[1])])
    scale = float(s.mean())
    tz = focal / max(scale, 1e-9)
    centre_3d = r @ model_mean
    txy = uv_mean * tz / focal - centre_3d[:2]
    return r, np.array([txy[0], txy[1], tz - centre_3d[2]])


def estimate_pose(
    points: np.ndarray,
    scheme: str,
    width: float,
    height: float,
    *,
    focal: float | None = None,
    weights: np.ndarray | None = None,
    iterations: int = 30,
) -> HeadPose:
    """Pose of one face from its landmarks ``points`` [K, 2] (image pixels) in ``scheme``.

    The camera: focal length ``focal`` (default :func:`default_focal` of the image size), principal
    point at the image centre (``width / 2``, ``height / 2``). ``weights`` [K] (default all 1) weigh
    each point's squared reprojection error; ``reprojection_error`` is their weighted RMS.
    """
    model = model_points(scheme)
    uv = np.asarray(points, dtype=np.float64)
    if uv.shape != (len(model), 2):
        raise ValueError(f"{scheme} needs [{len(model)}, 2] points, got {list(uv.shape)}")
    if not np.isfinite(uv).all():
        raise ValueError("landmarks must be finite")
    f = float(focal) if focal is not None else default_focal(width, height)
    centre = np.array([width / 2.0, height / 2.0])
    w = np.ones(len(model)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(model),) or not (np.isfinite(w).all() and (w >= 0).all() and (w > 0).sum() >= 6):
        raise ValueError(f"weights must be [{len(model)}] non-negative numbers, at least 6 of them > 0")
    sw = np.repeat(np.sqrt(w), 2)  # [2K] per coordinate
    x = model @ _FLIP  # [K, 3] model points in camera orientation (z away from the camera)
    r, t = _orthographic_init(x, uv - centre, f, w)
    if t[2] <= 0 or not np.isfinite(t).all():  # degenerate landmarks (all on a point or a line)
        t = np.array([0.0, 0.0, f])

    def residual(r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = x @ r.T + t  # [K, 3]
        z = np.maximum(q[:, 2:3], 1e-6)
        return sw * (f * q[:, :2] / z + centre - uv).ravel(), q

    err, q = residual(r, t)
    cost = float(err @ err)
    damping, done = 1e-3, False
    for _ in range(iterations):
        z = np.maximum(q[:, 2], 1e-6)
        # d(u, v)/dq [K, 2, 3]; dq/d(omega) = -[R x]_x (left-multiplied rotation update), dq/dt = I.
        dproj = np.zeros((len(q), 2, 3))
        dproj[:, 0, 0] = dproj[:, 1, 1] = f / z
        dproj[:, 0, 2] = -f * q[:, 0] / z**2
        dproj[:, 1, 2] = -f * q[:, 1] / z**2
        jw = -dproj @ _skew(q - t)  # [K, 2, 3]
        jac = sw[:, None] * np.concatenate([jw, dproj], axis=2).reshape(-1, 6)  # [2K, 6]
        jtj, jte = jac.T @ jac, jac.T @ err
        improved = False
        for _ in range(10):
            step = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj) + 1e-12), -jte)
            r_new, t_new = _exp_so3(step[:3]) @ r, t + step[3:]
            if t_new[2] <= 0:
                damping *= 10
                continue
            err_new, q_new = residual(r_new, t_new)
            cost_new = float(err_new @ err_new)
            if cost_new < cost:
                r, t, err, q = r_new, t_new, err_new, q_new
                done = cost - cost_new < 1e-10 * max(cost, 1.0)
                cost, damping, improved = cost_new, max(damping / 10, 1e-9), True
                break
            damping *= 10
        if not improved or done:
            break
    rotation = _FLIP @ r @ _FLIP  # camera orientation -> head frame
    yaw, pitch, roll = euler_from_rotation(rotation)
    rms = math.sqrt(cost / w.sum())
    return HeadPose(yaw, pitch, roll, rotation, t, f, rms)
