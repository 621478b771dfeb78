"""A deformable 3-D head for the synthetic face generator.

The head is one triangle mesh built once from the 3-D 68-point mean shape
(:mod:`model_store.meanshape`): every vertex is given in cylindrical coordinates around a
vertical axis behind the face, the radius is a thin-plate-spline surface through the 68
landmarks and an ellipsoidal skull, and the mesh is a Delaunay triangulation of the
(angle, height) parameters. Because the thin-plate spline is linear in its data, a change of
the landmarks (identity, expression) moves every other vertex through one precomputed matrix.

Coordinates: x to the image's right (the subject's left), y down, z towards the camera, in
mean-shape units (the jaw spans about 1.25 units, roughly 14 cm).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from model_store.meanshape import AFLW19_FROM_68, MEAN_SHAPE_68, aflw19_from_68

__all__ = [
    "AFLW19_FROM_68",
    "HeadModel",
    "aflw19_from_68",
    "head_model",
    "jaw_paths",
    "rotation_matrix",
]

# Axis of the cylindrical parametrisation and the skull ellipsoid (mean-shape units).
RINGS = 2
AXIS_Z = -0.45
SKULL_CENTRE_Y = -0.45
SKULL_RADII = (0.665, 0.86, 0.93)  # x, y, z semi-axes
_THETA_SCALE = 0.8  # metric weight of the angle (radians) against height in the (theta, y) plane

RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))
OUTER_MOUTH = tuple(range(48, 60))
INNER_MOUTH = tuple(range(60, 68))
JAW = tuple(range(17))
# Contour jaw labels (300-W's convention): how far each jaw point's search path runs towards the face's
# middle, as a fraction of the way to the midpoint of the point and its mirror (all the way: on a face
# turned far enough the nose, lips and chin are the outline, as in 300W-LP's landmark marching), and its
# number of samples.
JAW_PATH_FRACTION = 1.0
JAW_PATH_SAMPLES = 33


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """[3, 3] head rotation from degrees.

    yaw > 0 turns the nose towards the image's right (+x), pitch > 0 lifts it (-y, y is down),
    roll > 0 tilts the eye line clockwise on screen (its angle atan2(dy, dx) grows by ``roll``).
    Applied as R = R_roll @ R_pitch @ R_yaw to column vectors.
    """
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return np.asarray(rz @ rx @ ry)


def _skull_radius(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radius of the skull ellipsoid around the axis at angle ``theta`` (radians) and height ``y``."""
    a, b, c = SKULL_RADII
    s = np.sqrt(np.clip(1.0 - ((y - SKULL_CENTRE_Y) / b) ** 2, 0.05, None))
    return np.asarray(1.0 / np.sqrt((np.sin(theta) / (a * s)) ** 2 + (np.cos(theta) / (c * s)) ** 2))


def _to_cyl(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    theta = np.arctan2(p[:, 0], p[:, 2] - AXIS_Z)
    r = np.hypot(p[:, 0], p[:, 2] - AXIS_Z)
    return theta, p[:, 1].copy(), r


def _from_cyl(theta: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.stack([r * np.sin(theta), y, AXIS_Z + r * np.cos(theta)], axis=1)


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test. poly [P, 2], pts [N, 2] -> [N] bool."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    x1, y1 = poly[:, 0][None], poly[:, 1][None]
    x2, y2 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cond = (y1 > y) != (y2 > y)
    xint = x1 + (y - y1) * (x2 - x1) / np.where(y2 == y1, 1e-12, y2 - y1)
    return np.asarray((cond & (x < xint)).sum(axis=1) % 2 == 1)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (one instance per process)
class HeadModel:
    """The mean head mesh and the linear map that moves it with the landmarks.

    vertices: [V, 3] mean-shape vertices; the first 68 are the landmarks.
    triangles: [T, 3] vertex indices, counter-clockwise seen from outside (outward normals).
    deform: [V, 68] weights: a landmark displacement D [68, 3] moves the vertices by deform @ D.
    theta, height: [V] cylindrical parameters (for hair lines and other per-sample attributes).
    ao: [V] ambient-occlusion factor in (0, 1] (eye sockets, under the nose, lips and jaw are darker).
    tri_material: [T] 0 skin, 1 lips, 2 mouth interior, 3 right eye, 4 left eye.
    surf_theta [A], surf_y [B], surf_r [B, A]: the mean head's radius on a regular (angle, height) table
        (at least the skull's), for shells that sit on the head such as the hair.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    deform: np.ndarray
    theta: np.ndarray
    height: np.ndarray
    ao: np.ndarray
    tri_material: np.ndarray
    surf_theta: np.ndarray
    surf_y: np.ndarray
    surf_r: np.ndarray

    def surface_radius(self, theta: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear look-up of the mean head's radius at angles ``theta`` (radians) and heights ``y``."""
        ta, ya = self.surf_theta, self.surf_y
        fi = np.clip((np.asarray(theta) - ta[0]) / (ta[1] - ta[0]), 0, len(ta) - 1.001)
        fj = np.clip((np.asarray(y) - ya[0]) / (ya[1] - ya[0]), 0, len(ya) - 1.001)
        i, j = fi.astype(int), fj.astype(int)
        di, dj = fi - i, fj - j
        r = self.surf_r
        top = r[j, i] * (1 - di) + r[j, i + 1] * di
        bottom = r[j + 1, i] * (1 - di) + r[j + 1, i + 1] * di
        return np.asarray(top * (1 - dj) + bottom * dj)


@functools.lru_cache(maxsize=1)
def head_model() -> HeadModel:
    """Build (once per process, ~0.1 s) the mean head mesh."""
    from scipy.interpolate import RBFInterpolator
    from scipy.spatial import Delaunay

    lm = np.asarray(MEAN_SHAPE_68, dtype=np.float64)
    lt, ly, lr = _to_cyl(lm)

    def metric(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.stack([theta * _THETA_SCALE, y], axis=1)

    # Regular grid over the head, denser in angle at the front.
    thetas = np.radians(
        np.concatenate([np.arange(-180, -90, 22.5), np.arange(-90, 90.1, 9.0), [112.5, 135, 157.5]])
    )
    # Rows: evenly spaced in height over the face, then by latitude towards the crown (no pointed top).
    lat = np.radians(np.array([30.0, 42.0, 53.0, 63.0, 71.0, 78.0, 84.0]))
    crown = SKULL_CENTRE_Y - SKULL_RADII[1] * np.sin(lat)
    heights = np.concatenate([crown[::-1], np.arange(SKULL_CENTRE_Y - 0.42, 0.62, 0.1)])
    gt, gy = (a.ravel() for a in np.meshgrid(thetas, heights))
    # The jaw line as a function of angle: the grid stops just above it; under-jaw rings close the bottom.
    jaw_t, jaw_y = lt[list(JAW)], ly[list(JAW)]
    bottom = np.interp(gt, jaw_t, jaw_y, left=jaw_y[0], right=jaw_y[-1])
    # Behind the jaw's ends the head's lower edge runs down to the nape.
    side = np.clip((np.abs(gt) - abs(jaw_t[0])) / (np.radians(110) - abs(jaw_t[0])), 0.0, 1.0)
    bottom = np.where(side > 0, (1 - side) * bottom + side * 0.3, bottom - 0.03)
    keep = gy < bottom
    g_metric = metric(gt, gy)
    # Nose walls: explicit vertices on the sides of the bridge and above the wings (landmark + 3-D offset),
    # which give the nose its sides; each follows its landmark.
    nose_parent, nose_off = [], []
    for k, w, dy, dz in ((28, 0.045, 0.0, -0.06), (29, 0.06, 0.0, -0.08), (30, 0.075, 0.01, -0.12)):
        for sgn in (-1.0, 1.0):
            nose_parent.append(k)
            nose_off.append((sgn * w, dy, dz))
    for k in (31, 35):
        nose_parent.append(k)
        nose_off.append((0.008 * np.sign(lm[k, 0]), -0.05, 0.005))
    nose_p = lm[nose_parent] + np.array(nose_off)
    nt, ny, nr = _to_cyl(nose_p)

    # Topology is decided with the mouth open (lower lip moved down in parameter space), so that the
    # inner-lip contour bounds the mouth's triangles and the lips form a ring around it.
    ly_topo = ly.copy()
    ly_topo[[65, 66, 67]] += 0.07
    ly_topo[55:60] += 0.06
    ly_topo[[60, 64]] += 0.02
    l_topo = metric(lt, ly_topo)
    l_metric = metric(lt, ly)
    near = np.concatenate([l_topo, metric(nt, ny)])
    d_min = np.min(np.linalg.norm(g_metric[:, None] - near[None], axis=-1), axis=1)
    keep &= d_min > 0.055
    for poly_idx in (RIGHT_EYE, LEFT_EYE, OUTER_MOUTH):
        keep &= ~_inside(l_topo[list(poly_idx)], g_metric)
    gt, gy = gt[keep], gy[keep]

    # Thin-plate spline of the radius through the landmarks and skull anchors far from the face.
    anchor_t = np.radians(np.arange(-180, 180, 15.0))
    at, ay = (a.ravel() for a in np.meshgrid(anchor_t, np.arange(-1.25, 0.2, 0.2)))
    far = (np.abs(at) > np.radians(100)) | (ay < -0.95)
    at, ay = at[far], ay[far]
    data_metric = np.concatenate([l_metric, metric(at, ay)])
    data_r = np.concatenate([lr, _skull_radius(at, ay)])
    # Forehead: a few anchors on the skull above the brows keep the spline from bulging there.
    ft = np.radians(np.array([-60, -40, -20, 0, 20, 40, 60], dtype=np.float64))
    fy = np.full_like(ft, -0.80)
    data_metric = np.concatenate([data_metric, metric(ft, fy)])
    data_r = np.concatenate([data_r, _skull_radius(ft, fy) + 0.02 * np.cos(ft)])
    n_before_nose = len(data_r)
    data_metric = np.concatenate([data_metric, metric(nt, ny)])
    data_r = np.concatenate([data_r, nr])
    n_data = len(data_r)
    tps = RBFInterpolator(data_metric, np.eye(n_data), kernel="thin_plate_spline", smoothing=1e-6)
    grid_w = tps(metric(gt, gy))  # [G, n_data]: radius at grid points as a linear map of the data radii
    # Above the forehead the head is the skull ellipsoid (the spline is unconstrained up there).
    w_skull = np.clip((-0.8 - gy) / 0.25, 0.0, 1.0)
    grid_w = grid_w * (1 - w_skull)[:, None]
    gr = grid_w @ data_r + w_skull * _skull_radius(gt, gy)

    # Under-jaw rings: tucked under the jaw points towards the neck.
    ring_idx = np.arange(1, 16)
    rings_t, rings_y, rings_r, rings_src = [], [], [], []
    for dy, shrink in ((0.05, 0.9), (0.11, 0.74))[:RINGS]:
        rings_t.append(lt[ring_idx])
        rings_y.append(ly[ring_idx] + dy)
        rings_r.append(lr[ring_idx] * shrink)
        rings_src.append(ring_idx)
    rt, ry_, rr = np.concatenate(rings_t), np.concatenate(rings_y), np.concatenate(rings_r)

    all_t = np.concatenate([lt, gt, rt, nt])
    all_y = np.concatenate([ly, gy, ry_, ny])
    all_r = np.concatenate([lr, gr, rr, nr])
    verts = _from_cyl(all_t, all_y, all_r)

    # Deformation weights: landmarks move themselves; grid vertices follow through the spline's landmark
    # columns (a displacement field interpolated like the radius); rings follow their jaw point.
    n_grid, n_ring, n_nose = len(gt), len(rt), len(nt)
    deform = np.zeros((68 + n_grid + n_ring + n_nose, 68))
    deform[:68] = np.eye(68)
    gw = grid_w[:, :68].copy()
    for col, parent in enumerate(nose_parent):
        gw[:, parent] += grid_w[:, n_before_nose + col]
    deform[68 : 68 + n_grid] = gw
    src = np.concatenate(rings_src)
    deform[68 + n_grid + np.arange(n_ring), src] = 1.0
    deform[68 + n_grid + n_ring + np.arange(n_nose), nose_parent] = 1.0

    all_y_topo = np.concatenate([ly_topo, gy, ry_, ny])
    tri = Delaunay(metric(all_t, all_y_topo)).simplices
    # Drop long, thin triangles on the hull.
    pm = metric(all_t, all_y_topo)
    edge = np.max(
        np.stack([np.linalg.norm(pm[tri[:, i]] - pm[tri[:, (i + 1) % 3]], axis=1) for i in range(3)]), axis=0
    )
    tri = tri[edge < 0.42]
    # Orient outwards: the normal must point away from the axis.
    a, b, c = verts[tri[:, 0]], verts[tri[:, 1]], verts[tri[:, 2]]
    n = np.cross(b - a, c - a)
    centre = (a + b + c) / 3
    radial = centre - np.stack([0 * centre[:, 0], centre[:, 1], np.full(len(centre), AXIS_Z)], axis=1)
    flip = (n * radial).sum(axis=1) < 0
    tri[flip] = tri[flip][:, ::-1]

    # Materials from the landmark sets (no grid vertex lies inside an eye or the mouth).
    in_set = [
        np.isin(tri, s).all(axis=1) for s in (INNER_MOUTH, OUTER_MOUTH + INNER_MOUTH, RIGHT_EYE, LEFT_EYE)
    ]
    mat = np.zeros(len(tri), dtype=np.int64)
    mat[in_set[1]] = 1
    mat[in_set[0]] = 2
    mat[in_set[2]] = 3
    mat[in_set[3]] = 4

    # Ambient occlusion: Gaussian dips around eye sockets, nose sides, under the nose and lower lip.
    def dip(centre_pt: np.ndarray, sigma: float, depth: float) -> np.ndarray:
        d2 = ((verts - centre_pt) ** 2).sum(axis=1)
        return np.asarray(depth * np.exp(-d2 / (2 * sigma**2)))

    occ = np.zeros(len(verts))
    for eye in (RIGHT_EYE, LEFT_EYE):
        c_eye = lm[list(eye)].mean(axis=0)
        occ += dip(c_eye + np.array([0.0, -0.04, -0.02]), 0.10, 0.42)
        occ += dip(lm[eye[3]] + np.array([0.05 * np.sign(-c_eye[0]), 0.0, 0.0]), 0.05, 0.20)
    occ += dip(lm[33] + np.array([0, 0.04, -0.02]), 0.05, 0.35)
    occ += dip((lm[57] + lm[8]) / 2, 0.06, 0.18)
    for side in (31, 35):
        occ += dip(lm[side] + np.array([0.03 * np.sign(lm[side, 0]), -0.03, -0.04]), 0.05, 0.3)
    for eye_inner, wing in ((39, 31), (42, 35)):  # the sides of the nose bridge
        sgn = np.sign(lm[wing, 0])
        occ += dip((lm[eye_inner] + lm[wing]) / 2 + np.array([0.0, 0.0, 0.0]) * sgn, 0.045, 0.22)
    for corner in (48, 54):
        occ += dip(lm[corner], 0.035, 0.25)
    ao = np.clip(1.0 - occ, 0.45, 1.0)
    ao[68 + n_grid : 68 + n_grid + n_ring] *= 0.75  # under the jaw

    # Radius table for shells (hair): the spline surface, never inside the skull.
    st = np.radians(np.arange(-180.0, 180.1, 5.0))
    sy = np.arange(SKULL_CENTRE_Y - SKULL_RADII[1], 0.45, 0.025)
    tt, yy = np.meshgrid(st, sy)
    ws = np.clip((-0.8 - yy.ravel()) / 0.25, 0.0, 1.0)
    sr = (1 - ws) * (tps(metric(tt.ravel(), yy.ravel())) @ data_r) + ws * _skull_radius(
        tt.ravel(), yy.ravel()
    )
    sr = np.maximum(sr, _skull_radius(tt.ravel(), yy.ravel()))
    sr = sr.reshape(tt.shape)
    top = SKULL_CENTRE_Y - SKULL_RADII[1] * np.sin(np.radians(84.0))
    sr[sy < top] = np.minimum(sr[sy < top], _skull_radius(tt[sy < top], yy[sy < top]))

    for arr in (verts, tri, deform, all_t, all_y, ao, mat, st, sy, sr):
        arr.setflags(write=False)
    return HeadModel(verts, tri, deform, all_t, all_y, ao, mat, st, sy, sr)


@functools.lru_cache(maxsize=1)
def jaw_paths() -> np.ndarray:
    """[17, P, V] weights: ``jaw_paths() @ vertices`` gives, for every jaw point j, P points on the head's
    surface from j (sample 0, the landmark itself) straight across the (angle, height) parameters towards
    the midpoint of j and its mirror 16 - j, ``JAW_PATH_FRACTION`` of the way (row 8, the chin, is j itself).

    The weights are barycentric in the mesh's parameter triangulation, so the path moves with any
    deformation of the head (identity, expression) and any rotation: the visible contour of the turned
    head on that line is the path's point that projects furthest outwards (``render._contour_jaw``).
    """
    model = head_model()
    t, y = model.theta, model.height
    tri = model.triangles
    a, b, c = (np.stack([t[tri[:, i]], y[tri[:, i]]], axis=1) for i in range(3))
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    d = np.where(ok, det, 1.0)
    out = np.zeros((len(JAW), JAW_PATH_SAMPLES, len(t)))
    fractions = np.linspace(0.0, JAW_PATH_FRACTION, JAW_PATH_SAMPLES)
    for j in JAW:
        mirror = 16 - j
        if mirror == j:
            out[j, :, j] = 1.0
            continue
        out[j, 0, j] = 1.0
        start = np.array([t[j], y[j]])
        mid = (start + np.array([t[mirror], y[mirror]])) / 2
        for k, f in enumerate(fractions[1:], start=1):
            p = start + f * (mid - start)
            # barycentric coordinates of p in every triangle; the first that holds it (skin first)
            l1 = ((p[0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[1] - a[:, 1])) / d
            l2 = ((b[:, 0] - a[:, 0]) * (p[1] - a[:, 1]) - (p[0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / d
            l0 = 1.0 - l1 - l2
            inside = ok & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
            hits = np.flatnonzero(inside)
            if len(hits) == 0:  # outside the parameter mesh: the path ends here
                out[j, k:] = out[j, k - 1]
                break
            hit = hits[np.argsort(model.tri_material[hits] != 0, kind="stable")][0]
            out[j, k, tri[hit]] = (l0[hit], l1[hit], l2[hit])
    out.setflags(write=False)
    return out
