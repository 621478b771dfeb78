"""Re-posed real faces (what 300W-LP did for 300-W): a training face's photo, turned in 3-D.

For each *training* face of the real-face cache (``train.data.real``, ``split == "train"``, kept):

1. **Mesh.** MediaPipe Face Mesh's 468 points with depth (the ``mesh3d`` job of
   ``train/data/real_worker.py``, run on the same 384-px crop as the label check and mapped back to
   image pixels; :func:`build_mesh3d` caches them). MediaPipe gives z in the same units as x (its
   normalised z times the crop width), so depth is scaled consistently with x and y; here z points
   towards the camera. The triangles are MediaPipe's topology (``mediapipe_face_topology.json``,
   derived from the wheel's edge list by ``scripts/mediapipe_topology.py``, Apache-2.0), eyes and
   mouth closed.
2. **Beyond the mesh.** Two rings of extra vertices outside the face oval (:func:`extend_mesh`): ring 1
   at 1.3x the oval's distance from the face centre and a little behind it (ears, hair, the top of the
   neck), turning with the head; ring 2 at 2.2x, far behind and *fixed*, so the warp between the
   turned head and the untouched background is continuous. Beyond ring 2 the photo is unchanged.
3. **Texture.** Every vertex keeps its position in the photo as its texture coordinate: a rendered
   pixel takes the photo's colour at the barycentric mix of its triangle's source positions
   (orthographic camera, so screen-space barycentrics are exact).
4. **Pose.** The photo's head pose comes from its 68 labels (``model_store.pose.estimate_pose``). The
   target yaw is drawn on the *same side* as the photo's (the photo is mirrored, labels with the
   iBUG flip permutation, when the target is on the other side), by default no less turned than the
   photo, so the turn mostly hides surface rather than revealing surface the photo never showed;
   pitch is drawn in its range and roll kept. The mesh turns by ``R_target @ R_photo^T`` about a
   pivot behind the face (the head's centre, 0.35 face widths behind the mesh's centroid).
5. **Render.** scan.py's numpy z-buffer at 2x supersampling, front faces only. Pixels inside ring 2
   that no front face covers after the turn (folds behind the turned head) are filled with the photo
   blurred strongly (a Gaussian of 1/25 of the window), never with the sharp old face.
6. **Labels.** Each of dlib's 68 points is attached to the front-most triangle under it in the photo
   (face or ring 1: jaw points just outside the oval land on the ring) by barycentric coordinates, so
   it moves with the surface. At the jaw on the side turning away (points 9-16 for a positive target
   yaw, 0-7 for a negative one) the label marches to the visible contour, as 300-W annotates it: along
   the surface path from the point to the middle of the face (the midpoint of it and its mirror jaw
   point), the sample that projects furthest outwards (in the photo's direction from that midpoint
   to the point) is the silhouette of the turned mesh on that line.

Known artefacts (documented in docs/real_data.md): hair, ears and the neck are only as good as ring 1
(a smooth surface behind the oval), so a large turn stretches them; the mouth interior and the eyes
are closed surfaces (an open mouth is painted on them); surface the photo did not show (under the chin
when pitched up, the far cheek when turned back towards frontal) shows the nearest visible texture.

A rendered sample is a square window of ``WINDOW`` x the tight box of the labels around the face,
``image_size`` pixels wide.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from model_store.geometry import face_size, tight_box
from model_store.meanshape import aflw19_from_68
from model_store.pose import estimate_pose, rotation_from_euler
from model_store.schemes import get_scheme
from train.data.real import CROP_SCALE, CROP_SIZE, load_manifest
from train.data.scan import rasterise
from train.data.synthetic import PoseDistribution, RenderedFaces
from train.data.types import Sample

__all__ = [
    "REPOSE_VERSION",
    "ExtendedMesh",
    "FaceMesh",
    "RePosed",
    "ReposeOptions",
    "ReposedFaces",
    "attach",
    "build_mesh3d",
    "extend_mesh",
    "load_mesh3d",
    "mediapipe_topology",
    "mesh_crops",
    "repose_face",
    "surface_points",
]

REPOSE_VERSION = 1  # bump whenever a render for a given seed changes (invalidates caches)
SS = 2  # supersampling factor
WINDOW = 2.0  # window side / the larger side of the labels' tight box
RING1 = 1.3  # ring 1's distance from the face centre / the oval's
RING1_DEPTH = 0.3  # how far ring 1 lies behind the oval, in face widths
RING2 = 2.2  # ring 2 (fixed) / the oval's distance
PIVOT_DEPTH = 0.35  # the head's rotation centre behind the mesh's centroid, in face widths
MESH3D_FILE = "mesh3d.npz"
TOPOLOGY_FILE = Path(__file__).with_name("mediapipe_face_topology.json")
JAW_LEFT = tuple(range(0, 8))  # the subject's right jaw: the image's left in a frontal photo
JAW_RIGHT = tuple(range(9, 17))


# ------------------------------------------------------------------------------------------- meshes
@dataclass(frozen=True)
class FaceMesh:
    """A face surface seen in a photo.

    vertices [V, 3]: x, y in pixels (corner origin), z towards the camera in the same units;
    triangles [F, 3] vertex indices (any consistent winding); oval [B]: the boundary loop in order.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    oval: np.ndarray


@dataclass(frozen=True)
class ExtendedMesh:
    """A face mesh with the two rings of :func:`extend_mesh`.

    vertices [V + 2B, 3]; triangles [F', 3] wound so that each has a positive signed area in the photo
    (pixel coordinates, y down) where it faces the camera; fixed [V + 2B] bool (ring 2: does not turn);
    num_face_triangles: the first ones are the face's own; face_vertices: V.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    fixed: np.ndarray
    num_face_triangles: int
    face_vertices: int


@functools.lru_cache(maxsize=1)
def mediapipe_topology() -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe Face Mesh's (triangles [898, 3], face oval [36] in loop order)."""
    data = json.loads(TOPOLOGY_FILE.read_text())
    return np.asarray(data["triangles"], dtype=np.int64), np.asarray(data["oval"], dtype=np.int64)


def _signed_area(xy: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """[F] signed areas (x2) in pixel coordinates (positive: clockwise on screen with y down)."""
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    return np.asarray((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _face_width(mesh: FaceMesh) -> float:
    o = mesh.vertices[mesh.oval]
    return float(np.linalg.norm(o[:, None] - o[None], axis=-1).max())


def extend_mesh(mesh: FaceMesh) -> ExtendedMesh:
    """The face mesh, oriented (most of its area facing the camera in the photo), plus ring 1 (turns
    with the head) and ring 2 (fixed) outside its oval, joined by quads split into triangles."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    tris = np.asarray(mesh.triangles, dtype=np.int64)
    if _signed_area(v[:, :2], tris).sum() < 0:
        tris = tris[:, [0, 2, 1]]
    oval = np.asarray(mesh.oval, dtype=np.int64)
    b, n = len(oval), len(v)
    centre = v[oval, :2].mean(axis=0)
    width = _face_width(mesh)
    radial = v[oval, :2] - centre  # [B, 2]
    ring1 = np.column_stack([centre + radial * RING1, v[oval, 2] - RING1_DEPTH * width])
    ring2 = np.column_stack([centre + radial * RING2, np.full(b, v[:, 2].min() - 2.0 * width)])
    verts = np.concatenate([v, ring1, ring2])
    extra = []
    for inner, outer in ((oval, n + np.arange(b)), (n + np.arange(b), n + b + np.arange(b))):
        for i in range(b):
            j = (i + 1) % b
            extra += [(inner[i], inner[j], outer[j]), (inner[i], outer[j], outer[i])]
    ring_tris = np.asarray(extra, dtype=np.int64)
    flip = _signed_area(verts[:, :2], ring_tris) < 0  # each ring triangle faces the camera in the photo
    ring_tris[flip] = ring_tris[flip][:, [0, 2, 1]]
    fixed = np.zeros(len(verts), dtype=bool)
    fixed[n + b :] = True
    return ExtendedMesh(verts, np.concatenate([tris, ring_tris]), fixed, len(tris), n)


def attach(points: np.ndarray, mesh: ExtendedMesh) -> tuple[np.ndarray, np.ndarray]:
    """Each 2-D point [K, 2] on the front-most camera-facing triangle under it in the photo:
    (triangle indices [K], barycentric coordinates [K, 3]). A point under no triangle takes the
    nearest vertex (a degenerate barycentric (1, 0, 0) on one of its triangles)."""
    p = np.asarray(points, dtype=np.float64)
    v, t = mesh.vertices, mesh.triangles
    a, b, c = (v[t[:, k], :2][None] for k in range(3))  # [1, F, 2]
    q = p[:, None, :]  # [K, 1, 2]
    area = _signed_area(v[:, :2], t)[None]  # [1, F]

    def edge(u: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.asarray(
            (w[..., 0] - u[..., 0]) * (q[..., 1] - u[..., 1])
            - (w[..., 1] - u[..., 1]) * (q[..., 0] - u[..., 0])
        )

    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.stack([edge(b, c), edge(c, a), edge(a, b)], axis=-1) / area[..., None]  # [K, F, 3]
    inside = (area > 1e-9) & (lam >= -1e-9).all(axis=-1)
    depth = np.where(inside, (lam * v[t][None, :, :, 2]).sum(axis=-1), -np.inf)  # [K, F]
    best = depth.argmax(axis=1)
    bary = lam[np.arange(len(p)), best]
    for k in np.nonzero(~inside[np.arange(len(p)), best])[0]:
        nearest = int(np.linalg.norm(v[:, :2] - p[k], axis=1).argmin())
        tri = int(np.nonzero((t == nearest).any(axis=1))[0][0])
        best[k] = tri
        bary[k] = (t[tri] == nearest).astype(np.float64)
    return best.astype(np.int64), np.asarray(bary, dtype=np.float64)


def surface_points(mesh: ExtendedMesh, vertices: np.ndarray, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """[K, 3] points on the mesh with positions ``vertices`` [V, 3] given by (triangle, barycentrics)."""
    return np.asarray((vertices[mesh.triangles[tri]] * bary[..., None]).sum(axis=-2))


# ------------------------------------------------------------------------------------------- posing
@dataclass(frozen=True)
class RePosed:
    """One re-posed face: image [S, S, 3] uint8, points [68, 2] (S pixels, corner origin), face_mask
    [S, S] float32 (coverage by the face's own triangles, for tests and previews)."""

    image: np.ndarray
    points: np.ndarray
    face_mask: np.ndarray


def _turn(mesh: ExtendedMesh, rotation: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """[V', 3] vertices after turning the head (ring 2 stays)."""
    turned = (mesh.vertices - pivot) @ np.asarray(rotation).T + pivot
    return np.where(mesh.fixed[:, None], mesh.vertices, turned)


def _march_jaw(
    mesh: ExtendedMesh, turned: np.ndarray, points: np.ndarray, hidden: Sequence[int], samples: int = 48
) -> np.ndarray:
    """[len(hidden), 2] jaw labels on the turned mesh's contour (see the module docstring, step 6)."""
    out: list[np.ndarray | None] = []
    for j in hidden:
        start, mirror = points[j], points[16 - j]
        mid = (start + mirror) / 2
        outward = start - mid
        norm = float(np.linalg.norm(outward))
        if norm < 1e-6:
            out.append(None)
            continue
        path = start + (mid - start) * np.linspace(0.0, 1.0, samples)[:, None]  # [P, 2] in the photo
        tri, bary = attach(path, mesh)
        moved = surface_points(mesh, turned, tri, bary)[:, :2]  # [P, 2]
        out.append(moved[int((moved @ (outward / norm)).argmax())])
    return np.asarray([o if o is not None else np.full(2, np.nan) for o in out])


def repose_face(
    window: np.ndarray,
    mesh: FaceMesh,
    points: np.ndarray,
    rotation: np.ndarray,
    size: int,
    *,
    hidden_jaw: Sequence[int] = (),
    ss: int = SS,
) -> RePosed:
    """Turn a face by ``rotation`` [3, 3] and render it at ``size`` x ``size`` pixels.

    window [R, R, 3] uint8: the photo's window, with ``mesh`` and the 68 ``points`` [68, 2] in its
    pixels (R = ``ss`` * ``size``). ``hidden_jaw``: the jaw labels that march to the contour (those on
    the side turning away). Returns the image, the carried labels and the face's coverage.
    """
    r = window.shape[0]
    if window.shape[:2] != (r, r) or r != ss * size:
        raise ValueError(f"window must be [{ss * size}, {ss * size}, 3], got {list(window.shape)}")
    ext = extend_mesh(mesh)
    width = _face_width(mesh)
    centroid = np.asarray(mesh.vertices, dtype=np.float64).mean(axis=0)
    pivot = centroid - np.array([0.0, 0.0, PIVOT_DEPTH * width])
    turned = _turn(ext, rotation, pivot)
    # labels: carried by the surface, then the hidden jaw to the contour
    pts = np.asarray(points, dtype=np.float64)
    tri, bary = attach(pts, ext)
    moved = surface_points(ext, turned, tri, bary)[:, :2]
    if hidden_jaw:
        marched = _march_jaw(ext, turned, pts, hidden_jaw)
        ok = np.isfinite(marched).all(axis=1)
        moved[np.asarray(hidden_jaw)[ok]] = marched[ok]
    # render: z-buffer of the turned mesh, texture from the photo positions
    face_map, lam = rasterise(turned[:, :2], turned[:, 2], ext.triangles, (r, r))
    hit = face_map >= 0
    corners = ext.triangles[face_map[hit]]  # [M, 3]
    src = (ext.vertices[corners, :2] * lam[hit][..., None]).sum(axis=1)  # [M, 2] photo positions
    photo = window.astype(np.float32)
    out = np.empty((r, r, 3), dtype=np.float32)
    out[hit] = _bilinear(photo, src)
    # fill: inside ring 2 and uncovered -> the photo blurred strongly; outside ring 2 -> the photo
    before, _ = rasterise(ext.vertices[:, :2], ext.vertices[:, 2], ext.triangles, (r, r))
    holes = (before >= 0) & ~hit
    blurred = np.asarray(Image.fromarray(window).filter(ImageFilter.GaussianBlur(r / 25.0)), dtype=np.float32)
    out[holes] = blurred[holes]
    rest = ~hit & ~holes
    out[rest] = photo[rest]
    face = (face_map >= 0) & (face_map < ext.num_face_triangles)
    image = out.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    mask = face.astype(np.float32).reshape(size, ss, size, ss).mean(axis=(1, 3))
    return RePosed(np.clip(image + 0.5, 0, 255).astype(np.uint8), (moved / ss).astype(np.float32), mask)


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """[N, 3] colours of image [H, W, 3] at pixel positions xy [N, 2] (corner origin)."""
    h, w = image.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy, dtype=np.float32)


# -------------------------------------------------------------------------------------- one photo
@dataclass(frozen=True)
class ReposeOptions:
    """Target poses (degrees): yaw on a random side up to ``yaw_max`` in magnitude, at least the
    photo's own |yaw| when ``outward`` (the turn then hides surface rather than revealing unseen
    surface); pitch uniform in +-``pitch_max``; the photo's roll is kept."""

    yaw_max: float = 75.0
    pitch_max: float = 30.0
    outward: bool = True
    jaw: str = "contour"  # "contour": the far jaw on the visible outline (300-W); "surface": carried only

    def __post_init__(self) -> None:
        if self.jaw not in {"contour", "surface"}:
            raise ValueError(f"jaw must be contour or surface, got {self.jaw!r}")

    def draw(self, rng: np.random.Generator, photo_yaw: float) -> tuple[float, float]:
        """(target yaw, target pitch)."""
        side = 1.0 if rng.random() < 0.5 else -1.0
        low = min(abs(photo_yaw), self.yaw_max) if self.outward else 0.0
        yaw = side * float(rng.uniform(low, self.yaw_max))
        pitch = float(rng.uniform(-self.pitch_max, self.pitch_max))
        return yaw, pitch


_MIRROR = np.diag([-1.0, 1.0, 1.0])


def _window(image: np.ndarray, points: np.ndarray, side_px: int) -> tuple[np.ndarray, float, np.ndarray]:
    """The square window of ``WINDOW`` x the labels' tight box, ``side_px`` wide: (window [R, R, 3]
    uint8, scale k, origin [2]) with window = (image - origin) * k. Where the window leaves the photo
    it shows the photo mirrored at its border and blurred (a black frame, or repeated border pixels,
    would be warped into view as streaks when the head turns)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    side = WINDOW * float((hi - lo).max())
    origin = (lo + hi) / 2 - side / 2
    k = side_px / side
    h, w = image.shape[:2]
    pad = math.ceil(float(max(0.0, -origin.min(), origin[0] + side - w, origin[1] + side - h)))
    pad = min(pad + 1, 3 * max(h, w)) if pad > 0 else 0
    inside = np.ones((h, w), dtype=np.uint8) * 255
    if pad:
        reps = -(-pad // max(1, min(h, w)))  # np.pad "symmetric" needs pad <= size per call
        for _ in range(reps):
            step_pad = min(pad, image.shape[0], image.shape[1])
            image = np.pad(image, ((step_pad, step_pad), (step_pad, step_pad), (0, 0)), mode="symmetric")
            inside = np.pad(inside, step_pad)
            origin = origin + step_pad
            pad -= step_pad
            if pad <= 0:
                break
    step = int(1 / k) if k < 0.5 else 1  # shrink big photos first: bilinear sampling would alias
    data = (1 / (k * step), 0.0, origin[0] / step, 0.0, 1 / (k * step), origin[1] / step)

    def warp(arr: np.ndarray) -> np.ndarray:
        im = Image.fromarray(arr)
        if step > 1:
            im = im.reduce(step)
        return np.asarray(
            im.transform((side_px, side_px), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
        )

    out = warp(image)
    shift = origin - ((lo + hi) / 2 - side / 2)
    if (inside == 0).any():
        valid = warp(inside).astype(np.float32)[..., None] / 255.0
        blurred = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(side_px / 40.0)))
        out = np.clip(valid * out + (1 - valid) * blurred + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[..., :3]), k, origin - shift


def repose_photo(
    image: np.ndarray,
    points: np.ndarray,
    mesh468: np.ndarray,
    size: int,
    *,
    rng: np.random.Generator | None = None,
    options: ReposeOptions | None = None,
    target: tuple[float, float] | None = None,
    photo_pose: tuple[float, float, float] | None = None,
) -> tuple[RePosed, dict[str, Any]]:
    """Re-pose one face of a photo: at ``target`` (yaw, pitch) degrees, or at a pose drawn by
    ``options`` from ``rng``.

    image [H, W, 3] uint8; points [68, 2] its labels; mesh468 [468, 3] MediaPipe's points (image
    pixels, z towards the camera, same units). ``photo_pose``: the photo's (yaw, pitch, roll) in degrees
    where it is known (a render's); by default it is solved from the labels (``model_store.pose``).
    Returns the render (``size`` px) and its meta: the photo's pose, the target pose, whether the photo
    was mirrored.
    """
    pts = np.asarray(points, dtype=np.float64)
    h, w = image.shape[:2]
    pose = estimate_pose(pts, "ibug68", w, h)
    if photo_pose is not None:
        yaw0, pitch0, roll_given = (float(v) for v in photo_pose)
        pose = replace(
            pose, yaw=yaw0, pitch=pitch0, roll=roll_given, rotation=rotation_from_euler(*photo_pose)
        )
    rot0 = pose.rotation
    if target is None:
        if rng is None:
            raise ValueError("give a target pose or an rng to draw one")
        target = (options or ReposeOptions()).draw(rng, pose.yaw)
    yaw_t, pitch_t = target
    opt = options or ReposeOptions()
    r = SS * size
    window, k, origin = _window(image, pts, r)
    wpts = (pts - origin) * k
    verts = np.asarray(mesh468, dtype=np.float64).copy()
    verts[:, :2] = (verts[:, :2] - origin) * k
    verts[:, 2] *= k
    mirrored = bool(yaw_t * pose.yaw < 0)
    if mirrored:
        window = np.ascontiguousarray(window[:, ::-1])
        perm = np.asarray(get_scheme("ibug68").flip_permutation)
        wpts = np.column_stack([r - wpts[perm, 0], wpts[perm, 1]])
        verts[:, 0] = r - verts[:, 0]
        rot0 = _MIRROR @ rot0 @ _MIRROR
    roll0 = pose.roll * (-1 if mirrored else 1)
    delta = rotation_from_euler(yaw_t, pitch_t, roll0) @ rot0.T
    triangles, oval = mediapipe_topology()
    hidden = (JAW_RIGHT if yaw_t > 0 else JAW_LEFT) if opt.jaw == "contour" else ()
    out = repose_face(window, FaceMesh(verts, triangles, oval), wpts, delta, size, hidden_jaw=hidden)
    meta = {
        "photo_pose": [round(pose.yaw, 2), round(pose.pitch, 2), round(pose.roll, 2)],
        "yaw": yaw_t,
        "pitch": pitch_t,
        "roll": roll0,
        "mirrored": mirrored,
    }
    return out, meta


# ---------------------------------------------------------------------------------------- the meshes
def _crop_transform(box: Sequence[float]) -> tuple[float, float, float]:
    """(x0, y0, scale) of ``train.data.real._save_crop`` for a dlib box: image = crop / scale + (x0, y0)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    return cx - side / 2, cy - side / 2, CROP_SIZE / side


def mesh_from_crop(raw: Sequence[Sequence[float]], box: Sequence[float]) -> np.ndarray:
    """[468, 3] image pixels (z towards the camera) from the ``mesh3d`` job's crop-pixel answer."""
    x0, y0, scale = _crop_transform(box)
    m = np.asarray(raw, dtype=np.float64)
    return np.column_stack([m[:, 0] / scale + x0, m[:, 1] / scale + y0, -m[:, 2] / scale])


def mesh_crops(
    crops: Mapping[str, tuple[Path, Sequence[float]]], python: Path | str, work: Path | str
) -> tuple[str, dict[str, np.ndarray]]:
    """Run MediaPipe's ``mesh3d`` job on saved face crops (id -> (crop file made by ``_save_crop``, the
    face's box in image pixels)) with MediaPipe's interpreter ``python``; returns (the job's model name,
    id -> [468, 3] image pixels) for the faces it meshed (those it misses are left out)."""
    from train.data.real import _worker

    job = {"crops": [{"id": i, "file": str(file)} for i, (file, _) in crops.items()]}
    answer = _worker(Path(python), "mesh3d", job, Path(work))
    found = answer["faces"]
    meshes = {i: mesh_from_crop(found[i], box) for i, (_, box) in crops.items() if found.get(i) is not None}
    return str(answer["model"]), meshes


def build_mesh3d(
    real_root: Path | str, out: Path | str, *, python: Path | str | None = None, split: str = "train"
) -> Path:
    """Run MediaPipe (``mesh3d`` job) on the kept faces of ``split`` of the real-face cache and keep
    their 468 3-D points (image pixels) in ``out/mesh3d.npz`` (ids [N] str, points [N, 468, 3] float32,
    model str); faces already there are not run again, faces MediaPipe misses are left out.

    The crops are the label check's (``<real_root>/work/crops``) where present, else made here the same
    way under ``out/crops``. ``python``: MediaPipe's interpreter (default ``<real_root>/mp-venv``)."""
    from train.data.real import _load_rgb, _save_crop

    real_root, out = Path(real_root).resolve(), Path(out).resolve()
    manifest = load_manifest(real_root)
    faces = [f for f in manifest["faces"] if f.get("kept") and (split == "all" or f["split"] == split)]
    path = out / MESH3D_FILE
    have: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            have = dict(zip((str(i) for i in z["ids"]), z["points"], strict=True))
    wanted = {f["id"] for f in faces}
    have = {i: v for i, v in have.items() if i in wanted}  # faces no longer kept / in the split go
    todo = [f for f in faces if f["id"] not in have]
    model = ""
    if todo:
        crops: dict[str, tuple[Path, Sequence[float]]] = {}
        for f in todo:
            name = f"{f['id'].replace('/', '__')}.png"
            crop = real_root / "work" / "crops" / name
            if not crop.is_file():
                crop = out / "crops" / name
                crop.parent.mkdir(parents=True, exist_ok=True)
                _save_crop(_load_rgb(real_root / f["image"]), f["box"], crop)
            crops[f["id"]] = (crop, f["box"])
        py = Path(python) if python is not None else real_root / "mp-venv" / "bin" / "python"
        model, meshes = mesh_crops(crops, py, out / "work")
        have.update({i: m.astype(np.float32) for i, m in meshes.items()})
    elif path.is_file():
        with np.load(path) as z:
            model = str(z["model"])
    ids = sorted(have)
    out.mkdir(parents=True, exist_ok=True)
    points = np.stack([have[i] for i in ids]) if ids else np.zeros((0, 468, 3), np.float32)
    tmp = out / f"{MESH3D_FILE}.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, ids=np.asarray(ids), points=points, model=np.asarray(model))
    tmp.replace(path)
    return path


@functools.lru_cache(maxsize=2)
def _mesh3d_cached(path: str) -> tuple[dict[str, int], np.ndarray, str]:
    with np.load(path) as z:
        ids = [str(i) for i in z["ids"]]
        points = np.asarray(z["points"], dtype=np.float32)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return {i: k for k, i in enumerate(ids)}, points, digest


def load_mesh3d(path: Path | str) -> tuple[dict[str, int], np.ndarray, str]:
    """({face id: row}, points [N, 468, 3] float32, a short hash of the file) of a ``mesh3d.npz``."""
    return _mesh3d_cached(str(Path(path).resolve()))


# ------------------------------------------------------------------------------------------ dataset
def _balanced(items: Sequence[int], groups: Sequence[str], count: int) -> list[int]:
    """``count`` of ``items`` taken in turns from each group (groups in order of first appearance,
    each group's items in order); returned in their original order."""
    queues: dict[str, list[int]] = {}
    for item, group in zip(items, groups, strict=True):
        queues.setdefault(group, []).append(item)
    picked: list[int] = []
    depth = 0
    while len(picked) < count:
        for queue in queues.values():
            if depth < len(queue) and len(picked) < count:
                picked.append(queue[depth])
        depth += 1
    return sorted(picked)


@dataclass(frozen=True)
class LabelOffsets:
    """The re-posing pipeline's shared label offset per point and target yaw, as measured on renders whose
    exact labels are known (``tools.studies.repose_labels``: carried minus exact, x and y as a share of the
    face box, at pitch 0 for faces turned from near-frontal), taken off carried labels.

    yaws: [Y] increasing |yaw| in degrees (0 first, no offset); table: [Y, 68, 2]. Between the measured yaws
    the offset is interpolated linearly (beyond the last, the last); a face turned to negative yaw takes the
    mirror image of the offsets (x negated, points by the flip permutation). Pitch is not looked at.
    """

    yaws: np.ndarray
    table: np.ndarray

    @classmethod
    def from_report(cls, path: Path | str) -> LabelOffsets:
        rows = json.loads(Path(path).read_text())["by_target_yaw"]
        pairs = sorted((float(k), np.asarray(v["mean_residual_box"], np.float64)) for k, v in rows.items())
        if not pairs or pairs[0][0] != 0.0:
            pairs.insert(0, (0.0, np.zeros((68, 2))))
        return cls(np.asarray([y for y, _ in pairs]), np.stack([t for _, t in pairs]))

    def at(self, yaw: float) -> np.ndarray:
        """[68, 2] offsets (share of the face box) for a face turned to ``yaw`` degrees."""
        a = min(abs(float(yaw)), float(self.yaws[-1]))
        k = int(np.clip(np.searchsorted(self.yaws, a, side="right") - 1, 0, len(self.yaws) - 2))
        t = (a - self.yaws[k]) / max(self.yaws[k + 1] - self.yaws[k], 1e-9)
        off = (1 - t) * self.table[k] + t * self.table[k + 1]
        if yaw < 0:
            perm = np.asarray(get_scheme("ibug68").flip_permutation)
            off = np.column_stack([-off[perm, 0], off[perm, 1]])
        return np.asarray(off)

    def correct(self, points: np.ndarray, yaw: float) -> np.ndarray:
        """Carried labels [68, 2] with the offset at ``yaw`` taken off, scaled by their own box size."""
        pts = np.asarray(points, np.float64)
        return (pts - self.at(yaw) * face_size(pts)).astype(np.asarray(points).dtype)


class ReposedFaces(RenderedFaces):
    """``per_face`` re-posed renders of every kept training face of a real-face cache that has a mesh.

    Sample ``i`` is face ``i // per_face`` at the pose drawn from ``np.random.default_rng([seed, i])``,
    ``image_size`` pixels square, in ``scheme`` (ibug68, or aflw19 from the 68 points), kept as
    ``.npz`` under ``cache_dir`` like the synthetic and scan faces. ``split`` is ``"train"`` for training
    data; ``"test"`` re-poses the held-out people's faces (meshes built with ``wingmark data repose --split
    test``, a separate mesh file) to *evaluate* on turned real faces, and must never be part of a training
    mix: it would put those people into training. ``max_faces`` keeps that many faces, taken in turns from
    each identity (a few people's video frames do not dominate).
    """

    def __init__(
        self,
        scheme: str,
        root: Path | str,
        mesh3d: Path | str,
        per_face: int,
        seed: int,
        image_size: int = 256,
        options: ReposeOptions | None = None,
        cache_dir: Path | str | None = None,
        sources: Sequence[str] | None = None,
        max_faces: int | None = None,
        split: str = "train",
        label_offsets: Path | str | None = None,
    ) -> None:
        from train.data.real import RealFaces

        self.scheme = get_scheme(scheme).name
        if self.scheme not in {"ibug68", "aflw19"}:
            raise ValueError(f"re-posed faces carry ibug68 labels (or aflw19 from them), not {scheme!r}")
        if per_face < 1:
            raise ValueError(f"per_face must be >= 1, got {per_face}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.mesh_path = Path(mesh3d)
        rows, _, digest = load_mesh3d(self.mesh_path)
        if split not in {"train", "test"}:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.real, self.split = RealFaces(root, split, sources=sources), split
        self.faces = [k for k, f in enumerate(self.real.faces) if f.meta["id"] in rows]
        if max_faces is not None and len(self.faces) > max_faces:
            self.faces = _balanced(
                self.faces, [str(self.real.faces[k].meta["identity"]) for k in self.faces], max_faces
            )
        self.per_face, self.seed, self.image_size = int(per_face), int(seed), int(image_size)
        self.num = len(self.faces) * self.per_face
        self.options = options or ReposeOptions()
        self.pose = PoseDistribution()  # unused: targets depend on each photo's pose (see poses())
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = f"repose-{self.scheme}"
        self.offsets: LabelOffsets | None = None
        if label_offsets is not None:
            if self.scheme != "ibug68":
                raise ValueError("label_offsets correct the 68 carried points: use scheme ibug68")
            self.offsets = LabelOffsets.from_report(label_offsets)
        key = {
            "v": REPOSE_VERSION,
            "mesh3d": digest,
            "faces": hashlib.sha256(" ".join(self.face_ids()).encode()).hexdigest()[:12],
            "per_face": self.per_face,
            "seed": self.seed,
            "size": self.image_size,
            "options": [self.options.yaw_max, self.options.pitch_max, self.options.outward]
            + ([] if self.options.jaw == "contour" else [self.options.jaw]),
        }
        self._key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], scheme: str) -> ReposedFaces:
        """From a dataset spec ``{kind: repose, root, mesh3d, per_face, seed, image_size, yaw_max,
        pitch_max, outward, jaw (contour | surface), cache_dir, sources, max_faces, split, label_offsets}``
        (``mesh3d`` default ``<root>/../repose/mesh3d.npz``, for ``split: test``
        ``<root>/../repose-test/mesh3d.npz``; ``label_offsets``: a ``tools.studies.repose_labels`` report
        whose shared offsets are taken off the carried labels, see :class:`LabelOffsets`)."""
        root = Path(spec.get("root", "cache/real"))
        split = str(spec.get("split", "train"))
        mesh3d = (
            spec.get("mesh3d")
            or root.parent / ("repose" if split == "train" else f"repose-{split}") / MESH3D_FILE
        )
        options = ReposeOptions(
            yaw_max=float(spec.get("yaw_max", 75.0)),
            pitch_max=float(spec.get("pitch_max", 30.0)),
            outward=bool(spec.get("outward", True)),
            jaw=str(spec.get("jaw", "contour")),
        )
        sources = spec.get("sources")
        return cls(
            scheme,
            root,
            mesh3d,
            int(spec.get("per_face", 1)),
            int(spec.get("seed", 0)),
            image_size=int(spec.get("image_size", 256)),
            options=options,
            cache_dir=spec.get("cache_dir"),
            sources=list(sources) if sources is not None else None,
            max_faces=int(spec["max_faces"]) if spec.get("max_faces") is not None else None,
            split=split,
            label_offsets=spec.get("label_offsets"),
        )

    def face_ids(self) -> list[str]:
        """The ids of the faces used, in order."""
        return [str(self.real.faces[k].meta["id"]) for k in self.faces]

    def poses(self) -> np.ndarray:
        """[N, 3] target yaw, pitch, roll (degrees) of every sample, without rendering."""
        out = np.empty((self.num, 3))
        for i in range(self.num):
            sample = self.real[self.faces[i // self.per_face]]
            photo_yaw = float(sample.meta.get("yaw", 0.0))
            out[i, :2] = self.options.draw(np.random.default_rng([self.seed, i]), photo_yaw)
            out[i, 2] = float(sample.meta.get("roll", 0.0)) * (-1 if out[i, 0] * photo_yaw < 0 else 1)
        return out

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        sample = self.real[self.faces[i // self.per_face]]
        rows, points, _ = load_mesh3d(self.mesh_path)
        mesh = points[rows[sample.meta["id"]]]
        rng = np.random.default_rng([self.seed, i])
        out, meta = repose_photo(
            sample.image, sample.points, mesh, self.image_size, rng=rng, options=self.options
        )
        keep: dict[str, Any] = {
            k: sample.meta[k] for k in ("id", "source", "identity", "kind") if k in sample.meta
        }
        weights = sample.meta.get("point_weights")  # per-point teacher agreement, where the cache has it
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64).reshape(68)
            if meta["mirrored"]:
                w = w[np.asarray(get_scheme("ibug68").flip_permutation)]
            keep["point_weights68"] = [round(float(v), 5) for v in w]
        p19 = aflw19_from_68(out.points.astype(np.float64)).astype(np.float32)
        return out.image, out.points, p19, {**keep, **meta, "split": self.split}

    def _load(self, index: int) -> Sample:
        """As :class:`RenderedFaces`, with the photo's per-point weights (``meta["point_weights68"]``)
        as ``meta["point_weights"]`` in this scheme (19-point: the mean weight of each 68-point group)."""
        sample = super()._load(index)
        if self.offsets is not None:
            points = self.offsets.correct(sample.points, float(sample.meta["yaw"]))
            sample = replace(sample, points=points, box=tight_box(points).astype(np.float32))
        w68 = sample.meta.pop("point_weights68", None)
        if w68 is not None:
            w = np.asarray(w68, dtype=np.float64)
            if self.scheme == "aflw19":
                w = aflw19_from_68(np.stack([w, w], axis=1))[:, 0]
            sample.meta["point_weights"] = w.astype(np.float32)
        return sample


# ------------------------------------------------------------------------------------------ preview
PREVIEW_TARGETS: tuple[tuple[float, float], ...] = (
    (-75, 0), (-50, 0), (-25, 0), (0, 0), (25, 0), (50, 0), (75, 0), (0, -30), (0, 30), (60, 20),
)  # fmt: skip


def pick_preview_faces(real_root: Path | str, mesh3d: Path | str, count: int = 5) -> list[int]:
    """Indices (into ``RealFaces(real_root, "train")``) of training faces for the preview: near-frontal
    (|yaw| <= 12, |roll| <= 10: every column turns *away* from the photo), at least 90 px, whose window
    lies inside the photo, best teacher agreement first; one per identity and one per source."""
    from train.data.pts300w import read_pts
    from train.data.real import RealFaces

    rows, _, _ = load_mesh3d(mesh3d)
    real = RealFaces(real_root, "train")
    scored: list[tuple[float, int]] = []
    for k, face in enumerate(real.faces):
        if face.meta["id"] not in rows:
            continue
        pts = read_pts(face.pts)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        size = float((hi - lo).max())
        with Image.open(face.image) as im:
            w, h = im.size  # the header only
        origin = (lo + hi) / 2 - WINDOW * size / 2
        if size < 90 or origin.min() < 0 or origin[0] + WINDOW * size > w or origin[1] + WINDOW * size > h:
            continue
        pose = estimate_pose(pts, "ibug68", w, h)
        if abs(pose.yaw) > 12 or abs(pose.roll) > 10:
            continue
        scored.append((float((face.meta.get("agreement") or {}).get("nme", 1.0)), k))
    chosen: list[int] = []
    people: set[str] = set()
    sources: set[str] = set()
    for _, k in sorted(scored):
        meta = real.faces[k].meta
        if meta["identity"] in people or meta["source"] in sources:
            continue
        people.add(str(meta["identity"]))
        sources.add(str(meta["source"]))
        chosen.append(k)
        if len(chosen) == count:
            break
    return chosen


def write_preview(
    real_root: Path | str,
    mesh3d: Path | str,
    out: Path | str = Path("docs/img/repose_grid.jpg"),
    faces: Sequence[int] | None = None,
    targets: Sequence[tuple[float, float]] = PREVIEW_TARGETS,
    size: int = 160,
) -> Path:
    """A grid: one training face per row, its photo's window, then renders at ``targets`` (yaw, pitch),
    the 68 carried labels drawn (jaw red, the rest green); returns the JPEG's path."""
    from PIL import ImageDraw

    from train.data.real import RealFaces

    real = RealFaces(real_root, "train")
    rows, points, _ = load_mesh3d(mesh3d)
    picked = list(faces) if faces is not None else pick_preview_faces(real_root, mesh3d)
    sheet = Image.new("RGB", ((len(targets) + 1) * size, len(picked) * size), (255, 255, 255))
    for r, k in enumerate(picked):
        sample = real[k]
        mesh = points[rows[sample.meta["id"]]]
        window, scale, origin = _window(sample.image, sample.points.astype(np.float64), size)
        tiles = [(window, (sample.points - origin) * scale, "photo")]
        for yaw, pitch in targets:
            done, _ = repose_photo(sample.image, sample.points, mesh, size, target=(yaw, pitch))
            tiles.append((done.image, done.points, f"yaw {yaw:+.0f} pitch {pitch:+.0f}"))
        for c, (image, pts, label) in enumerate(tiles):
            tile = Image.fromarray(image)
            draw = ImageDraw.Draw(tile)
            for j, (x, y) in enumerate(pts):
                colour = (255, 40, 40) if j < 17 else (40, 255, 40)
                draw.ellipse((x - 1.4, y - 1.4, x + 1.4, y + 1.4), fill=colour)
            draw.text((3, 2), label, fill=(255, 255, 0))
            sheet.paste(tile, (c * size, r * size))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, quality=88, optimize=True)
    return path
