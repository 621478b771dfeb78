"""Render one synthetic face photograph with exact landmarks (numpy + Pillow, CPU).

Pipeline (``render_face``):

1. Shape: the 3-D head of :mod:`train.data.face3d` with random identity (face width, jaw, eyes,
   nose, mouth, brows) and expression (mouth opening, smile, brow raise, blinks).
2. Pose and camera: head rotation (yaw, pitch, roll), a neck and shoulders that follow part of it,
   perspective projection with a random camera distance.
3. Painter's algorithm at 2x resolution into one RGBA "G-buffer": R = material id, G = Lambert +
   ambient-occlusion shading, B = specular, A = hair coverage; back faces are culled. Decals (brows,
   lashes, nostrils, ears, teeth, lip line) are depth-sorted with the mesh, so the far eye or brow
   disappears behind the nose in profile.
4. Per pixel at the output size: albedo from a per-sample material table (antialiased by the 2x2
   reduction), smoothed shading, skin and hair texture, irises and pupils with a catch light.
5. Background clutter, then occluders (hands, objects, glasses), and camera effects: colour cast,
   blur, sensor noise, low resolution, JPEG.

Labels: with ``jaw="surface"`` (the default) every landmark, visible or not, is the projection of its
3-D point. With ``jaw="contour"`` the jaw points follow 300-W's convention instead: each jaw point is
the point of the head's visible outline on its line across the face (``face3d.jaw_paths``), so on a
turned head the far jaw runs along the cheek's silhouette, where a human annotator (and the teachers
of the real faces) would put it; a jaw point that is itself on or inside the outline stays where it is.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from train.data.face3d import (
    AXIS_Z,
    INNER_MOUTH,
    LEFT_EYE,
    RIGHT_EYE,
    SKULL_CENTRE_Y,
    SKULL_RADII,
    HeadModel,
    aflw19_from_68,
    head_model,
    jaw_paths,
    rotation_matrix,
)

if TYPE_CHECKING:
    from train.data.skin import SkinPatch

__all__ = ["JAW_CONVENTIONS", "RenderOptions", "RenderedFace", "render_face"]

SS = 2  # supersampling factor of the G-buffer

# Material ids in the G-buffer's red channel.
BG, SKIN, LIPS, MOUTH, TEETH, SCLERA_R, SCLERA_L, BROW, HAIR, NECK, CLOTH = range(11)
NOSTRIL, LASH, EAR, EAR_IN, IRIS, PUPIL, LIPLINE, CREASE, FOLD = range(11, 20)
_TRI_MAT = np.array([SKIN, LIPS, MOUTH, SCLERA_R, SCLERA_L], dtype=np.int64)
_SPEC_OF = {SKIN: 0.35, LIPS: 0.6, SCLERA_R: 0.8, SCLERA_L: 0.8, HAIR: 0.25, NECK: 0.2, EAR: 0.3, CLOTH: 0.05}

# Skin albedo anchors (sRGB), light to dark; a sample interpolates between neighbours.
_SKIN_TONES = np.array(
    [
        [250, 222, 200], [241, 200, 172], [228, 183, 150], [212, 160, 124],
        [190, 134, 98], [160, 106, 74], [124, 80, 55], [88, 58, 42],
    ],
    dtype=np.float64,
)  # fmt: skip
_HAIR_COLOURS = np.array(
    [[22, 18, 16], [45, 32, 24], [78, 54, 36], [120, 86, 54], [168, 130, 82], [200, 170, 120],
     [140, 70, 40], [150, 150, 150], [215, 215, 210]],
    dtype=np.float64,
)  # fmt: skip
_HAIR_P = np.array([0.28, 0.24, 0.16, 0.1, 0.06, 0.04, 0.04, 0.05, 0.03])
_IRIS_COLOURS = np.array(
    [[60, 36, 22], [95, 60, 35], [70, 95, 120], [80, 120, 150], [90, 110, 70], [120, 100, 60]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class RenderOptions:
    """Knobs of the renderer (all probabilities per sample)."""

    occlusion_prob: float = 0.2
    glasses_prob: float = 0.12
    blur_prob: float = 0.3
    noise_prob: float = 0.6
    jpeg_prob: float = 0.6
    lowres_prob: float = 0.15
    face_fraction: tuple[float, float] = (0.34, 0.48)  # chin-to-brow height / image size


@dataclass
class RenderedFace:
    """image [S, S, 3] uint8; points68 [68, 2], points19 [19, 2] in image pixels (corner origin).

    materials: with ``keep_materials``, the [2S, 2S] uint8 material-id map (ids in this module) of
    the face before occluders and camera effects; supersampled pixel (i, j) covers image
    [j / 2, (j + 1) / 2) x [i / 2, (i + 1) / 2).
    """

    image: np.ndarray
    points68: np.ndarray
    points19: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    materials: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- shape
def _random_shape(
    rng: np.random.Generator, model_landmarks: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """[68, 3] identity + expression landmarks and the expression parameters."""
    p = model_landmarks.copy()
    x, y = p[:, 0], p[:, 1]
    lower = np.clip((y + 0.1) / 0.7, 0.0, 1.0)
    p[:, 0] *= 1 + (rng.normal(1.0, 0.06) - 1) * lower  # jaw width
    chin = np.clip((y - 0.25) / 0.35, 0.0, 1.0)
    p[:, 1] += rng.normal(0.0, 0.035) * chin  # chin length
    # Eyes: size and spacing.
    for eye in (RIGHT_EYE, LEFT_EYE):
        idx = list(eye)
        c = p[idx].mean(axis=0)
        p[idx] = c + (p[idx] - c) * rng.normal(1.0, 0.07)
    spacing = rng.normal(0.0, 0.015)
    p[list(RIGHT_EYE), 0] -= spacing
    p[list(LEFT_EYE), 0] += spacing
    p[17:27, 1] += rng.normal(0.0, 0.02)  # brow height
    # Nose: width, length, projection.
    nose = list(range(31, 36))
    p[nose, 0] = p[33, 0] + (p[nose, 0] - p[33, 0]) * rng.normal(1.0, 0.1)
    p[29:36, 1] += rng.normal(0.0, 0.02) * np.linspace(0.4, 1.0, 7)
    p[[29, 30], 2] += rng.normal(0.0, 0.035)
    # Mouth: width and lip thickness.
    mouth = list(range(48, 68))
    mc = p[mouth].mean(axis=0)
    p[mouth, 0] = mc[0] + (p[mouth, 0] - mc[0]) * rng.normal(1.0, 0.07)
    p[49:54, 1] -= abs(rng.normal(0.0, 0.01))
    p[55:60, 1] += abs(rng.normal(0.0, 0.012))
    p += rng.normal(0.0, 0.005, size=p.shape)
    p *= np.array([rng.normal(1.0, 0.04), rng.normal(1.0, 0.04), rng.normal(1.0, 0.07)])
    del x

    # Expression.
    smile = float(rng.uniform(-0.3, 1.0)) if rng.random() < 0.45 else 0.0
    for corner, sgn in ((48, -1.0), (54, 1.0), (60, -1.0), (64, 1.0)):
        p[corner, 0] += sgn * 0.035 * max(smile, 0.0)
        p[corner, 1] -= 0.035 * smile
    for near in (49, 53, 59, 55):
        p[near, 1] -= 0.015 * smile
    opening = float(rng.uniform(0.02, 0.2)) ** 1.3 * 2.2 if rng.random() < 0.28 else 0.0
    if opening > 0:
        p[[65, 66, 67], 1] += opening
        p[55:60, 1] += opening * 0.92
        p[[48, 54, 60, 64], 1] += opening * 0.35
        jaw_w = np.clip(1.0 - np.abs(np.arange(17) - 8) / 7.5, 0.0, 1.0) ** 1.2
        p[:17, 1] += opening * 0.75 * jaw_w
        p[:17, 2] -= opening * 0.15 * jaw_w
    else:  # closed lips touch
        for up, lo in ((61, 67), (62, 66), (63, 65)):
            mid = (p[up] + p[lo]) / 2
            p[up], p[lo] = mid - [0, 0.003, 0], mid + [0, 0.003, 0]
    brow = float(np.clip(rng.normal(0.0, 0.45), -0.8, 1.2))
    p[17:27, 1] -= 0.03 * brow
    blink = float(rng.uniform(0.4, 1.0)) if rng.random() < 0.08 else 0.0
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        p[up] += (p[lo] - p[up]) * blink * 0.85
    return p, {"smile": smile, "mouth_open": opening, "brow_raise": brow, "blink": blink}


# ------------------------------------------------------------------------------------------- textures
def _tiled_detail(detail: np.ndarray, size: int, tile_px: float) -> np.ndarray:
    """[size, size] float32: ``detail`` resized to ``tile_px`` and tiled mirrored (no seams)."""
    t = max(4, round(tile_px))
    tile = np.asarray(
        Image.fromarray(np.asarray(detail, dtype=np.float32), mode="F").resize(
            (t, t), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    block = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
    reps = size // (2 * t) + 1
    return np.tile(block, (reps, reps))[:size, :size]


def _noise(rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth value noise [H, W] float32 in about -1..1: a random window of a cached texture.

    The texture (twice the size, fixed seed) is made once per (size, cells); the window offset and
    orientation come from ``rng``, so results are deterministic and cost a slice, not a resize.
    """
    bank = _noise_bank(size, cells)
    w, h = size
    ox, oy = int(rng.integers(0, w)), int(rng.integers(0, h))
    view = bank[oy : oy + h, ox : ox + w]
    flip = int(rng.integers(4))
    if flip & 1:
        view = view[:, ::-1]
    if flip & 2:
        view = view[::-1]
    return view


def _grain(rng: np.random.Generator, s: int) -> np.ndarray:
    """[S, S] unit Gaussian sensor noise: a random window of a cached field."""
    bank = _grain_bank(s)
    ox, oy = int(rng.integers(0, s)), int(rng.integers(0, s))
    return bank[oy : oy + s, ox : ox + s]


@functools.lru_cache(maxsize=8)
def _grain_bank(s: int) -> np.ndarray:
    arr = np.random.default_rng([7, s]).standard_normal((2 * s, 2 * s), dtype=np.float32)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=64)
def _noise_bank(size: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng([cells[0], cells[1], *size])
    small = rng.uniform(0, 255, size=(cells[1] * 2, cells[0] * 2)).astype(np.uint8)
    img = Image.fromarray(small, "L").resize((size[0] * 2, size[1] * 2), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    arr.setflags(write=False)
    return arr


def _hsv_to_rgb(h: float, sat: float, val: float) -> np.ndarray:
    """One HSV colour (all 0..1) -> [3] RGB 0..255."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    r, g, b = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.array([r, g, b]) * 255.0


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """[S, S, 3] float32 cluttered background: mostly muted colours, sharp or out of focus."""
    blur = float(rng.choice([1.0, 2.0, 4.0], p=[0.35, 0.35, 0.3]))  # drawn at S / blur, then upsampled
    n = max(8, int(s / blur))
    hue = rng.uniform(0, 1)

    def colour() -> tuple[int, ...]:
        sat = rng.uniform(0, 0.75) ** 2
        return tuple(
            int(c) for c in _hsv_to_rgb((hue + rng.normal(0, 0.12)) % 1.0, sat, rng.uniform(0.08, 0.98))
        )

    small = np.stack([[colour() for _ in range(3)] for _ in range(3)]).astype(np.uint8)
    img = Image.fromarray(small, "RGB").resize((n, n), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 16))):
        col = colour()
        kind = rng.random()
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * n
        w, h = rng.uniform(0.03, 0.7, 2) * n
        if kind < 0.5:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=col)
        elif kind < 0.7:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=col)
        elif kind < 0.85:
            end = (x0 + rng.normal(0, n / 2), y0 + rng.normal(0, n / 2))
            draw.line((x0, y0, *end), fill=col, width=int(rng.integers(1, max(2, n // 25))))
        else:
            pts = (np.array([x0, y0]) + rng.uniform(-0.3, 0.3, (5, 2)) * n).ravel().tolist()
            draw.polygon(pts, fill=col)
    if n != s:
        img = img.resize((s, s), Image.Resampling.BILINEAR)
    # Surface texture (plaster, fabric, foliage...), as blurred as the rest of the background.
    cells = max(4, int(48 / blur))
    tex = 0.6 * _noise(rng, (s, s), (cells, cells)) + 0.4 * _noise(rng, (s, s), (cells * 4, cells * 4))
    return np.asarray(img, dtype=np.float32) * (1.0 + rng.uniform(0.03, 0.25) * tex)[..., None]


# ------------------------------------------------------------------------------------------ rendering
class _Painter:
    """Collects depth-sorted polygons (flat coordinate lists) for the G-buffer."""

    def __init__(self) -> None:
        self.depth: list[float] = []
        self.coords: list[list[float]] = []
        self.fill: list[tuple[int, ...]] = []
        self.width: list[int] = []  # 0: polygon, > 0: polyline of that width

    def add(self, depth: float, coords: np.ndarray, fill: tuple[int, ...], width: int = 0) -> None:
        """coords: [P, 2] G-buffer pixel coordinates (Pillow's centre-at-integer convention)."""
        self.depth.append(depth)
        self.coords.append(np.asarray(coords, dtype=np.float64).ravel().tolist())
        self.fill.append(fill)
        self.width.append(width)

    def add_many(self, depth: np.ndarray, coords: np.ndarray, fills: np.ndarray) -> None:
        """depth [T], coords [T, P, 2], fills [T, 4] int."""
        self.depth.extend(depth.tolist())
        self.coords.extend(coords.reshape(len(coords), -1).tolist())
        self.fill.extend(tuple(f) for f in fills.tolist())
        self.width.extend([0] * len(depth))

    def draw(self, draw: ImageDraw.ImageDraw) -> None:
        order = np.argsort(np.asarray(self.depth), kind="stable")
        for i in order.tolist():
            if self.width[i]:
                xy = self.coords[i]
                draw.line(xy, fill=self.fill[i], width=self.width[i], joint="curve")
            else:
                draw.polygon(self.coords[i], fill=self.fill[i])


@dataclass(frozen=True)
class _HairShell:
    """A hair cap in head coordinates: vertices [V, 3], triangles [T, 3]; the hair line y(theta)."""

    vertices: np.ndarray
    triangles: np.ndarray
    line_theta: np.ndarray
    line_y: np.ndarray


def _hair_shell(rng: np.random.Generator, model: HeadModel, style: str) -> _HairShell:
    """A shell over the skull from a random hair line (forehead arc, temples, nape) up to the crown."""
    cols = np.radians(np.arange(-180.0, 180.0, 15.0))
    side = np.abs(cols)
    hairline = rng.normal(-0.98, 0.06)
    line = hairline + 0.38 * np.clip((side - 0.55) / 0.9, 0, 1) + 0.6 * np.clip((side - 1.7) / 0.9, 0, 1)
    if rng.random() < 0.25:  # a fringe
        line = np.where(side < 0.95, np.maximum(line, rng.uniform(-0.8, -0.64)), line)
    if rng.random() < 0.3:  # a side parting / asymmetric sweep
        line = line + rng.normal(0, 0.05) * np.sin(cols)
    line = line + rng.normal(0.0, 0.012, len(cols))
    thick = rng.uniform(0.03, 0.09) * (1.6 if style == "long" else 1.0)
    y_top = SKULL_CENTRE_Y - SKULL_RADII[1] * math.sin(math.radians(84.0))
    t = np.linspace(0.0, 1.0, 5)[:, None]
    yy = line[None, :] + (y_top - line[None, :]) * np.sin(t * np.pi / 2)
    tt = np.broadcast_to(cols[None, :], yy.shape)
    rr = model.surface_radius(tt, yy) + thick * np.minimum(1.0, 0.45 + 2.5 * t)
    ring = np.stack([rr * np.sin(tt), yy, AXIS_Z + rr * np.cos(tt)], axis=-1).reshape(-1, 3)
    pole = np.array([[0.0, y_top - thick, AXIS_Z]])
    verts = np.concatenate([ring, pole])
    nc = len(cols)
    tris = []
    if style == "long":  # hair hanging from the sides and back of the hair line down to the shoulders
        length = rng.uniform(0.7, 1.7)
        drop = np.stack([line + length * 0.5, line + length], axis=0)  # [2, C]
        td = np.broadcast_to(cols[None, :], drop.shape)
        r0 = rr[0][None, :]
        rd = np.maximum(r0, model.surface_radius(td, np.minimum(drop, 0.3)) + thick) + np.array(
            [[0.03], [0.08]]
        )
        skirt = np.stack([rd * np.sin(td), drop, AXIS_Z + rd * np.cos(td)], axis=-1).reshape(-1, 3)
        base = len(verts)
        verts = np.concatenate([verts, skirt])
        hangs = side >= np.radians(65)
        for i in range(nc):
            j = (i + 1) % nc
            if not (hangs[i] and hangs[j]):
                continue
            for top_i, top_j, bot_i, bot_j in (
                (i, j, base + i, base + j),
                (base + i, base + j, base + nc + i, base + nc + j),
            ):
                tris += [(top_i, top_j, bot_j), (top_i, bot_j, bot_i)]
    for r in range(len(t) - 1):
        for i in range(nc):
            a, b = r * nc + i, r * nc + (i + 1) % nc
            c, d = (r + 1) * nc + (i + 1) % nc, (r + 1) * nc + i
            tris += [(a, b, c), (a, c, d)]
    last = (len(t) - 1) * nc
    tris += [(last + i, last + (i + 1) % nc, len(verts) - 1) for i in range(nc)]
    tri = np.array(tris)
    # Outward orientation (away from the head's centre).
    p0, p1, p2 = verts[tri[:, 0]], verts[tri[:, 1]], verts[tri[:, 2]]
    n = np.cross(p1 - p0, p2 - p0)
    out = (p0 + p1 + p2) / 3 - np.array([0.0, SKULL_CENTRE_Y, AXIS_Z])
    flip = (n * out).sum(axis=1) < 0
    tri[flip] = tri[flip][:, ::-1]
    return _HairShell(verts, tri, cols, line)


@functools.lru_cache(maxsize=1)
def _beard_zones(model: HeadModel) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex weights (0..1) of the beard (chin, jaw, lower cheeks, sideburns) and moustache zones."""
    lm = model.vertices[:68]
    th, y = model.theta, model.height
    t_lm = np.arctan2(lm[:, 0], lm[:, 2] - AXIS_Z)
    a48, a3, a1 = abs(t_lm[48]), abs(t_lm[3]), abs(t_lm[1])
    # Upper edge of the beard: under the lower lip at the centre, up the cheeks to the sideburns.
    line = np.interp(np.abs(th), [0.0, a48, a3, a1, a1 + 0.15], [lm[57, 1] + 0.02, lm[48, 1] - 0.02,
                     lm[3, 1] - 0.08, lm[0, 1] - 0.2, lm[0, 1] - 0.2])  # fmt: skip
    beard = np.clip((y - line) / 0.04, 0, 1) * (np.abs(th) < a1 + 0.12)
    # Moustache: between the nose base and the upper lip, as wide as the mouth.
    half = abs(t_lm[54] - t_lm[48]) / 2 + 0.08
    mou = np.clip((y - lm[33, 1] - 0.015) / 0.02, 0, 1) * np.clip((lm[51, 1] - y) / 0.015, 0, 1)
    mou = mou * np.clip((half - np.abs(th)) / 0.05, 0, 1)
    beard.setflags(write=False)
    mou.setflags(write=False)
    return beard, mou


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9))


JAW_CONVENTIONS = ("surface", "contour")


def _contour_jaw(
    points: np.ndarray,
    vertices: np.ndarray,
    rotation: np.ndarray,
    project: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """[68, 2] ``points`` (projected landmarks) with each jaw point moved to the head's visible outline.

    vertices: [V, 3] the posed head's vertices; rotation: [3, 3] its rotation. Along each jaw point's path
    (``face3d.jaw_paths``) the sample that projects furthest outwards, along the turned head's x axis
    on the point's side, is the outline on that line; it replaces the point only when it lies further out.
    """
    paths = project(np.einsum("jpv,vc->jpc", jaw_paths(), vertices))  # [17, P, 2]
    axis = np.asarray(rotation)[:2, 0]
    axis = axis / max(float(np.linalg.norm(axis)), 1e-9)
    out = np.array(points, dtype=np.float64, copy=True)
    for j in range(17):
        if j == 8:
            continue
        outward = axis * (1.0 if j > 8 else -1.0)
        score = paths[j] @ outward
        k = int(score.argmax())
        if score[k] > float(out[j] @ outward):
            out[j] = paths[j, k]
    return out


def render_face(
    rng: np.random.Generator,
    size: int,
    yaw: float,
    pitch: float,
    roll: float,
    options: RenderOptions | None = None,
    *,
    geometry_only: bool = False,
    keep_materials: bool = False,
    skin_patch: SkinPatch | None = None,
    jaw: str = "surface",
) -> RenderedFace:
    """Render one face of ``size`` x ``size`` pixels at the given pose (degrees).

    ``skin_patch`` (a real cheek patch, :mod:`train.data.skin`) tints the skin towards the patch's
    colour and multiplies the skin's shading by the patch's tiled fine detail. It draws nothing from
    ``rng``, so the geometry, the labels and every other random choice stay those of the seed.

    With ``geometry_only`` only the landmarks are computed (the same as a full render from the same
    rng state: every geometric draw comes first) and the image is empty ([0, 0, 3]); this is many
    times faster, e.g. for PDB statistics over a large set.

    ``jaw``: ``surface`` labels every jaw point at its projected 3-D position, ``contour`` on the visible
    outline (see the module docstring); only the labels differ, never the image or the random draws.
    """
    if jaw not in JAW_CONVENTIONS:
        raise ValueError(f"jaw must be one of {JAW_CONVENTIONS}, got {jaw!r}")
    opt = options or RenderOptions()
    model = head_model()
    s = size
    big = s * SS

    # --- shape
    lm, expr = _random_shape(rng, np.asarray(model.vertices[:68]))
    verts = model.vertices + model.deform @ (lm - model.vertices[:68])
    # --- pose and camera
    r_head = rotation_matrix(yaw, pitch, roll)
    pivot = np.array([0.0, 0.15, -0.5])
    v_cam = (verts - pivot) @ r_head.T + pivot
    lm_cam = (lm - pivot) @ r_head.T + pivot
    r_neck = rotation_matrix(0.35 * yaw, 0.2 * pitch, 0.5 * roll)
    r_torso = rotation_matrix(0.12 * yaw + rng.normal(0, 8), 0.0, 0.2 * roll)
    dist = float(rng.uniform(4.5, 14.0))
    face_px = float(rng.uniform(*opt.face_fraction)) * s
    px_per_unit = face_px / 1.05  # at the head's depth

    def project(p: np.ndarray) -> np.ndarray:
        z = dist / (dist - p[..., 2:3])
        return np.asarray(p[..., :2] * z * px_per_unit)

    pts68 = project(lm_cam)
    pts19 = project(aflw19_from_68(lm_cam))
    lo, hi = pts68.min(axis=0), pts68.max(axis=0)
    centre = np.array([s / 2, s / 2]) + rng.normal(0.0, 0.04 * s, 2) - (lo + hi) / 2
    centre[1] += 0.02 * s  # a little more room for the forehead and hair above
    labels68 = _contour_jaw(pts68, v_cam, r_head, project) if jaw == "contour" else pts68
    if geometry_only:
        return RenderedFace(
            image=np.zeros((0, 0, 3), np.uint8),
            points68=(labels68 + centre).astype(np.float32),
            points19=(pts19 + centre).astype(np.float32),
            meta={"yaw": float(yaw), "pitch": float(pitch), "roll": float(roll), **expr},
        )

    hair_style = str(rng.choice(["short", "long", "bald", "bun"], p=[0.47, 0.41, 0.04, 0.08]))
    hair_shell = _hair_shell(rng, model, hair_style) if hair_style != "bald" else None
    if hair_shell is not None:
        # Head triangles wholly under the hair are never seen: skip them.
        under = model.height < np.interp(model.theta, hair_shell.line_theta, hair_shell.line_y) - 0.03
        under[:68] = False
    else:
        under = np.zeros(len(verts), dtype=bool)

    def to_px(p: np.ndarray) -> np.ndarray:
        return project(p) + centre

    cam = np.array([0.0, 0.0, dist])

    # --- lighting
    light = _unit(np.array([rng.normal(0, 0.6), rng.normal(-0.4, 0.4), abs(rng.normal(0.9, 0.3)) + 0.2]))
    ambient = float(rng.uniform(0.2, 0.45))
    diffuse = float(rng.uniform(0.7, 1.1))
    gloss = float(rng.uniform(0.1, 1.0))

    def shade_of(n: np.ndarray, cen: np.ndarray, ao: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        ndl = np.clip(n @ light, 0.0, None)
        view = _unit(cam - cen)
        half = _unit(view + light)
        spec = np.clip((n * half).sum(-1), 0, None) ** 24 * gloss * (ndl > 0)
        shade = ao * (ambient + diffuse * ndl)
        return shade, spec

    def g(v: np.ndarray) -> np.ndarray:  # shading to the G channel (0..1.6 -> 0..255)
        return np.clip(v / 1.6 * 255, 0, 255).astype(np.int64)

    painter = _Painter()

    # --- back hair (2-D hull behind everything), neck, shoulders
    def hull(points: np.ndarray) -> np.ndarray:
        from scipy.spatial import ConvexHull

        h = ConvexHull(points)
        return np.asarray(points[h.vertices] * SS - 0.5)

    if hair_shell is not None:
        hv = (hair_shell.vertices - pivot) @ r_head.T + pivot
        back = [hv]
        if hair_style == "long":
            length = rng.uniform(0.6, 1.6)
            curtain = np.array([[sx * 0.78, yy, -0.55] for sx in (-1, 1) for yy in (0.0, length)])
            back.append((curtain - pivot) @ r_neck.T + pivot)
        elif hair_style == "bun":
            bun = np.array([0.0, -1.15, -1.05]) + 0.3 * rng.normal(0, 1, (12, 3)) * [1.0, 0.7, 0.7]
            back.append((bun - pivot) @ r_head.T + pivot)
        hp = to_px(np.concatenate(back))
        painter.add(-1e6, hull(hp), (HAIR, int(g(np.array(0.7 * ambient + 0.2 * diffuse)).item()), 10, 255))
        cv = hv[hair_shell.triangles]
        cn = _unit(np.cross(cv[:, 1] - cv[:, 0], cv[:, 2] - cv[:, 0]))
        cc = cv.mean(axis=1)
        cvis = ((cam - cc) * cn).sum(-1) > 0
        csh, csp = shade_of(cn, cc, 1.0)
        cfill = np.stack(
            [np.full(len(cc), HAIR), g(csh), (csp * 90).astype(np.int64), np.full(len(cc), 255)], 1
        )
        painter.add_many((cc - cam)[cvis, 2] + 0.04, to_px(cv[cvis]) * SS - 0.5, cfill[cvis])

    neck_a = np.linspace(0, 2 * np.pi, 19)[:-1]
    neck_y = np.array([-0.1, 0.55, 1.3])
    neck_rx, neck_rz, neck_z = (0.44, 0.38, 0.46), (0.4, 0.36, 0.42), (-0.52, -0.47, -0.5)
    nv = np.array(
        [
            [rx * np.sin(a), yy, cz + rz * np.cos(a)]
            for yy, rx, rz, cz in zip(neck_y, neck_rx, neck_rz, neck_z, strict=True)
            for a in neck_a
        ]
    )
    nv[:, 0] *= rng.normal(1.0, 0.08)
    nv = (nv - pivot) @ r_neck.T + pivot
    na = len(neck_a)
    j = np.arange(na)
    quads = np.concatenate(
        [np.stack([r * na + j, r * na + (j + 1) % na, (r + 1) * na + (j + 1) % na, (r + 1) * na + j], 1)
         for r in range(len(neck_y) - 1)]
    )  # fmt: skip
    q = nv[quads]  # [Q, 4, 3]
    qn = -_unit(np.cross(q[:, 1] - q[:, 0], q[:, 3] - q[:, 0]))  # outward
    qc = q.mean(axis=1)
    front = ((cam - qc) * qn).sum(-1) > 0
    # The head shades the top of the neck.
    qsh, qsp = shade_of(qn, qc, np.where(quads.min(axis=1) < na, 0.5, 0.8))
    qfill = np.stack([np.full(len(q), NECK), g(qsh), (qsp * 40).astype(np.int64), np.zeros(len(q), int)], 1)
    painter.add_many((-1e5 + qc[:, 2])[front], to_px(q[front]) * SS - 0.5, qfill[front])
    shoulder = np.array(
        [[-0.3, 0.95, -0.4], [-0.9, 1.15, -0.5], [-1.6, 1.45, -0.55], [-2.0, 2.2, -0.5], [-2.2, 4.0, -0.5],
         [2.2, 4.0, -0.5], [2.0, 2.2, -0.5], [1.6, 1.45, -0.55], [0.9, 1.15, -0.5], [0.3, 0.95, -0.4],
         [0.0, 1.05 + rng.uniform(0, 0.5), -0.2]]
    )  # fmt: skip
    shoulder[:, 0] *= rng.uniform(0.85, 1.15)
    sp_px = to_px((shoulder - pivot) @ r_torso.T + pivot)
    cloth_shade = ambient + diffuse * max(0.2, float(light[2]))
    painter.add(-5e4, sp_px * SS - 0.5, (CLOTH, int(g(np.array(cloth_shade))), 0, 0))

    # --- head mesh
    tri = model.triangles
    a, b, c = v_cam[tri[:, 0]], v_cam[tri[:, 1]], v_cam[tri[:, 2]]
    n = _unit(np.cross(b - a, c - a))
    cen = (a + b + c) / 3
    vis = (((cam - cen) * n).sum(-1) > 0) & ~under[tri].all(axis=1)
    ao_t = model.ao[tri].mean(axis=1)
    sh, sp = shade_of(n, cen, ao_t)
    mats = _TRI_MAT[model.tri_material]
    spec_scale = np.array([_SPEC_OF.get(int(m), 0.3) for m in range(18)])[mats]
    px = to_px(v_cam) * SS - 0.5
    tri_px = px[tri]
    # K channel of skin: redness (cheeks, nose, chin, ears are redder); hair uses 255.
    mv = model.vertices
    red_v = np.zeros(len(mv))
    for centre_pt, sigma, amp in (
        ((mv[2] + mv[31] + mv[41]) / 3, 0.12, 1.0),
        ((mv[14] + mv[35] + mv[46]) / 3, 0.12, 1.0),
        (mv[30], 0.08, 0.8),
        (mv[8], 0.1, 0.5),
    ):
        red_v += amp * np.exp(-((mv - centre_pt) ** 2).sum(axis=1) / (2 * sigma**2))
    red_t = np.clip(red_v[tri].mean(axis=1) * rng.uniform(0.3, 1.0), 0, 1)
    gg, bb = g(sh), np.clip(sp * spec_scale * 255, 0, 255).astype(np.int64)
    aa = (red_t * 150).astype(np.int64)
    # Facial hair: K above 160 marks hair coverage (stubble, moustache, beard) on skin triangles.
    beard_style = str(rng.choice(["none", "stubble", "moustache", "beard"], p=[0.7, 0.12, 0.05, 0.13]))
    if beard_style != "none":
        zones = _beard_zones(model)
        weight = zones[1] if beard_style == "moustache" else np.maximum(zones[0], zones[1])
        density = {"stubble": rng.uniform(0.25, 0.5), "moustache": rng.uniform(0.7, 1.0)}.get(
            beard_style, rng.uniform(0.75, 1.0)
        )
        cover_t = weight[tri].mean(axis=1) * density
        aa = np.where(cover_t > 0.12, (160 + 95 * np.clip(cover_t, 0, 1)).astype(np.int64), aa)
    depth = (cen - cam)[:, 2]
    painter.add_many(depth[vis], tri_px[vis], np.stack([mats, gg, bb, aa], axis=1)[vis])

    # --- decals (a small offset towards the camera puts them over the skin they sit on)
    decals: list[tuple[np.ndarray, int, np.ndarray, float, int, float]] = []

    def add_decal(points_head: np.ndarray, mat: int, normal_head: np.ndarray, ao: float = 0.9,
                  width: int = 0, spec: float = 0.0) -> None:  # fmt: skip
        decals.append((points_head, mat, normal_head, ao, width, spec))

    up = np.array([0.0, -1.0, 0.0])
    fwd = np.array([0.0, 0.0, 1.0])
    brow_thick = rng.uniform(0.028, 0.055)
    for brow_idx in (list(range(17, 22)), list(range(22, 27))):
        bp = lm[brow_idx]
        inner_first = brow_idx[0] == 22
        taper = np.linspace(1.0, 0.45, 5) if inner_first else np.linspace(0.45, 1.0, 5)
        top = bp + up * (brow_thick * taper)[:, None] * 0.7 + fwd * 0.01
        bottom = bp - up * (brow_thick * taper)[:, None] * 0.45 + fwd * 0.01
        add_decal(np.concatenate([top, bottom[::-1]]), BROW, fwd, ao=0.85)
    lash_w = max(1, round(SS * s / 256 * rng.uniform(1.2, 2.5)))
    for eye in (RIGHT_EYE, LEFT_EYE):
        upper_lid = lm[list(eye[:4])]  # outer/inner corner and the two upper-lid points
        add_decal(upper_lid + fwd * 0.006, LASH, fwd, width=lash_w)
        # Eyelid crease above the lid and the lower lid's rim.
        crease = upper_lid[[0, 1, 2, 3]] + up * rng.uniform(0.018, 0.035) + fwd * 0.004
        add_decal(crease, CREASE, fwd, width=max(1, lash_w - 1))
        lower = lm[[eye[3], eye[4], eye[5], eye[0]]] + fwd * 0.004 + up * -0.004
        add_decal(lower, CREASE, fwd, width=1)
    for wing, nostril_side in ((31, 32), (35, 34)):
        ctr = (lm[wing] * 0.45 + lm[nostril_side] * 0.55) + np.array([0, -0.008, -0.004])
        ang = np.linspace(0, 2 * np.pi, 11)[:-1]
        ring = ctr + np.stack([0.036 * np.cos(ang), 0.01 * np.sin(ang), 0.018 * np.sin(ang)], axis=1)
        add_decal(ring, NOSTRIL, _unit(np.array([0.0, 1.0, 0.8])), ao=0.5)
        # The alar crease: a shadow line curving up around the nose wing.
        sgn = float(np.sign(lm[wing, 0] - lm[33, 0]))
        crease = lm[wing] + np.array(
            [
                [-sgn * 0.01, 0.012, 0.0],
                [sgn * 0.012, -0.01, -0.01],
                [sgn * 0.008, -0.04, -0.01],
                [-sgn * 0.01, -0.06, 0.0],
            ]
        )
        add_decal(crease, FOLD, _unit(np.array([sgn * 0.7, 0.0, 1.0])), width=max(1, round(SS * s / 220)))
    fold = rng.uniform(0.0, 1.0) + max(expr["smile"], 0.0)
    if fold > 0.6:  # nasolabial folds, from the nose wings towards the mouth corners
        for wing, corner, sgn in ((31, 48, -1.0), (35, 54, 1.0)):
            a0 = lm[wing] + np.array([sgn * 0.03, -0.02, -0.03])
            a2 = lm[corner] + np.array([sgn * 0.035, 0.03, -0.02])
            a1 = (a0 + a2) / 2 + np.array([sgn * 0.02, 0.0, 0.0])
            add_decal(
                np.stack([a0, a1, a2]),
                FOLD,
                _unit(np.array([sgn * 0.6, 0.0, 1.0])),
                width=max(1, SS * s // 200),
            )
    if expr["mouth_open"] > 0.04:
        pass  # teeth are drawn per pixel inside the mouth (below)
    else:
        add_decal(lm[list(INNER_MOUTH[:5])] + fwd * 0.004, LIPLINE, fwd, width=max(1, SS * s // 256))
    if hair_style != "long" or rng.random() < 0.3:
        for sgn in (-1.0, 1.0):
            ang = np.linspace(0, 2 * np.pi, 13)[:-1]
            ear_c = np.array([sgn * 0.6, (lm[0, 1] + lm[2, 1]) / 2 - 0.03, -0.5])
            shape_y = 0.2 * np.sin(ang) - 0.03 * np.cos(ang) ** 2
            ring = ear_c + np.stack([sgn * 0.04 * np.cos(ang), shape_y, 0.1 * np.cos(ang) - 0.02], axis=1)
            normal = _unit(np.array([sgn, 0.0, 0.35]))
            add_decal(ring, EAR, normal, ao=0.85, spec=0.3)
            add_decal(ear_c + (ring - ear_c) * 0.55 + normal * 0.01, EAR_IN, normal, ao=0.6)

    # Shade every decal at once, then queue the visible ones with the mesh.
    sizes = [len(d[0]) for d in decals]
    allp = (np.concatenate([d[0] for d in decals]) - pivot) @ r_head.T + pivot
    allpx = to_px(allp) * SS - 0.5
    splits = np.cumsum(sizes)[:-1]
    centres = np.stack([c.mean(axis=0) for c in np.split(allp, splits)])
    d_n = _unit(np.stack([d[2] for d in decals]) @ r_head.T)
    d_facing = ((cam - centres) * d_n).sum(-1) > 0
    d_sh, d_sp = shade_of(d_n, centres, np.array([d[3] for d in decals]))
    d_g = g(d_sh)
    d_spec = np.clip(d_sp * np.array([d[5] for d in decals]) * 255, 0, 255).astype(np.int64)
    # A little towards the camera, over the skin (or, for teeth, the mouth interior) they sit on.
    d_depth = (centres - cam)[:, 2] + np.where(np.array([d[1] for d in decals]) == TEETH, 0.05, 0.012)
    for di, (pp, dec) in enumerate(zip(np.split(allpx, splits), decals, strict=True)):
        if d_facing[di]:
            painter.add(float(d_depth[di]), pp, (dec[1], int(d_g[di]), int(d_spec[di]), 0), dec[4])

    gbuf = Image.new("CMYK", (big, big), (0, 0, 0, 0))  # 4 plain channels: no alpha premultiplication
    painter.draw(ImageDraw.Draw(gbuf))
    mat_big = np.array(gbuf.getchannel(0))

    # --- irises and pupils: per pixel inside each eye's sclera (searched in a window around the eye)
    gaze = rotation_matrix(rng.normal(0, 10), rng.normal(0, 7), 0.0) @ fwd
    iris_r = rng.uniform(0.05, 0.058)
    pupil_ratio = rng.uniform(0.3, 0.5)
    u1 = _unit(np.cross(gaze, up))
    u2 = _unit(np.cross(gaze, u1))
    catch: list[np.ndarray] = []
    for eye, sclera in ((RIGHT_EYE, SCLERA_R), (LEFT_EYE, SCLERA_L)):
        e_px = (pts68[list(eye)] + centre) * SS
        x0, y0 = np.clip(np.floor(e_px.min(axis=0)).astype(int) - 2, 0, big)
        x1, y1 = np.clip(np.ceil(e_px.max(axis=0)).astype(int) + 3, 0, big)
        win = mat_big[y0:y1, x0:x1]
        ys, xs = np.nonzero(win == sclera)
        if len(ys) == 0:
            continue
        ec = lm[list(eye)].mean(axis=0) + np.array([0.0, 0.0, -0.01])
        ring = np.stack([ec, ec + u1 * iris_r, ec + u2 * iris_r])
        rp = to_px((ring - pivot) @ r_head.T + pivot) * SS
        m = np.stack([rp[1] - rp[0], rp[2] - rp[0]], axis=1)
        if abs(np.linalg.det(m)) < 1e-6:
            continue
        st = np.linalg.solve(m, np.stack([xs + x0 + 0.5 - rp[0, 0], ys + y0 + 0.5 - rp[0, 1]]))
        rr = (st**2).sum(axis=0)
        win[ys[rr < 1.0], xs[rr < 1.0]] = IRIS
        win[ys[rr < pupil_ratio**2], xs[rr < pupil_ratio**2]] = PUPIL
        catch.append(
            rp[0] / SS + (rp[1] - rp[0]) / SS * 0.35 * light[0] + (rp[2] - rp[0]) / SS * 0.35 * light[1]
        )

    # --- teeth: per pixel inside the open mouth, under the upper (and in a wide mouth the lower) lip
    if expr["mouth_open"] > 0.04:
        ip = (pts68[60:68] + centre) * SS  # inner lip contour in G-buffer pixels
        x0, y0 = np.clip(np.floor(ip.min(axis=0)).astype(int) - 2, 0, big)
        x1, y1 = np.clip(np.ceil(ip.max(axis=0)).astype(int) + 3, 0, big)
        win = mat_big[y0:y1, x0:x1]
        ys, xs = np.nonzero(win == MOUTH)
        if len(ys):
            xq, yq = xs + x0 + 0.5, ys + y0 + 0.5
            upper_line = ip[[0, 1, 2, 3, 4]]  # 60 -> 64
            lower_line = ip[[0, 7, 6, 5, 4]]  # 60, 67, 66, 65, 64
            unit_px = px_per_unit * SS
            top_h = min(0.045, expr["mouth_open"] * 0.45) * unit_px
            low_h = min(0.03, max(expr["mouth_open"] - 0.08, 0.0) * 0.4) * unit_px
            span = max(float(upper_line[4, 0] - upper_line[0, 0]), 1e-6)
            taper = (
                1.0 - np.clip(np.abs((xq - upper_line[0, 0]) / span * 2 - 1), 0, 1) ** 6
            )  # rounder at corners
            o_up = np.argsort(upper_line[:, 0])
            o_lo = np.argsort(lower_line[:, 0])
            y_up = np.interp(xq, upper_line[o_up, 0], upper_line[o_up, 1])
            y_lo = np.interp(xq, lower_line[o_lo, 0], lower_line[o_lo, 1])
            teeth = (yq - y_up < top_h * taper) | (y_lo - yq < low_h * taper)
            win[ys[teeth], xs[teeth]] = TEETH

    # --- materials -> albedo through an RGBA palette; the 2x2 reduction antialiases every edge
    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    i0 = int(tone)
    skin = _SKIN_TONES[i0] + (tone - i0) * (_SKIN_TONES[min(i0 + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[i0])
    skin = skin * rng.normal(1.0, 0.025, 3)
    if skin_patch is not None:  # a real skin colour, half-way: the photo's colour is already lit
        skin = 0.5 * skin + 0.5 * np.asarray(skin_patch.colour, dtype=np.float64)
    hair_col = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)] * rng.normal(1.0, 0.08, 3)
    lut = np.zeros((256, 4), dtype=np.float64)
    lut[SKIN, :3] = skin
    lut[NECK, :3] = skin * 0.95
    lut[EAR, :3] = skin * [1.0, 0.92, 0.9]
    lut[EAR_IN, :3] = skin * 0.72
    lut[LIPS, :3] = skin * [0.9, 0.66, 0.66] * rng.uniform(0.8, 1.0)
    lut[LIPLINE, :3] = skin * 0.3
    lut[MOUTH, :3] = [60, 22, 22]
    lut[TEETH, :3] = [215, 205, 180]
    sclera_c = np.array([228, 222, 212]) * rng.uniform(0.75, 0.92)
    lut[SCLERA_R, :3] = sclera_c
    lut[SCLERA_L, :3] = sclera_c
    lut[IRIS, :3] = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * rng.normal(1.0, 0.08, 3)
    lut[PUPIL, :3] = [10, 8, 8]
    lut[BROW, :3] = skin + (hair_col * 0.7 - skin) * rng.uniform(0.75, 0.95)
    lut[LASH, :3] = hair_col * 0.3 + 6
    lut[CREASE, :3] = skin * 0.7
    lut[FOLD, :3] = skin * 0.86
    lut[NOSTRIL, :3] = skin * 0.28
    lut[HAIR, :3] = hair_col
    cloth_hsv = (rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.1, 0.95))
    lut[CLOTH, :3] = _hsv_to_rgb(*cloth_hsv)
    lut[:, :3] *= 1.0 + rng.normal(0, 0.03, 3)  # the light's colour
    pal = Image.fromarray(mat_big, "P")
    pal.putpalette(np.clip(lut[:, :3], 0, 255).astype(np.uint8).tobytes(), rawmode="RGB")
    # Background is black in the palette, so the reduced colour is premultiplied by the coverage.
    premult = np.asarray(pal.convert("RGB").reduce(SS), dtype=np.float32)
    cover_img = Image.fromarray(mat_big, "L").point([0] + [255] * 255).reduce(SS)
    alpha = np.asarray(cover_img, dtype=np.float32) * (1.0 / 255.0)
    gsmall = gbuf.reduce(SS)

    # --- shading: smoothed by a blur normalised over the foreground (no dark halo at the silhouette)
    radius = max(1.0, 0.015 * s)
    smooth = ImageFilter.GaussianBlur(max(0.7, 0.0065 * s))  # hides the facets, keeps the nose and eyes
    num = np.asarray(gsmall.getchannel(1).filter(smooth), dtype=np.float32)
    den = np.asarray(cover_img.filter(smooth), dtype=np.float32)
    spec = np.asarray(gsmall.getchannel(2).filter(ImageFilter.BoxBlur(radius * 0.5)), dtype=np.float32)
    factor = num / np.maximum(den, 1.0) * 1.6  # [S, S] shading

    # --- textures (per-pixel factors on premultiplied colour): skin mottling and redness, hair strands
    factor *= 1.0 + 0.045 * _noise(rng, (s, s), (12, 12)) + 0.03 * _noise(rng, (s, s), (56, 56))
    k_chan = np.asarray(
        gsmall.getchannel(3).filter(ImageFilter.BoxBlur(max(1.0, 0.006 * s))), dtype=np.float32
    )
    k_chan = k_chan + np.float32(22.0) * _noise(rng, (s, s), (max(8, s // 6), max(8, s // 6))) * (
        k_chan > 100
    )
    hair_a = np.clip((k_chan - 160.0) * (1.0 / 95.0), 0.0, 1.0)
    if skin_patch is not None:  # real pores and fine shading where there is skin, not hair
        factor *= 1.0 + (_tiled_detail(skin_patch.detail, s, 0.25 * face_px) - 1.0) * (1.0 - hair_a)
    red = np.clip(k_chan * (1.0 / 150.0), 0.0, 1.0) * (1.0 - hair_a)
    tint = np.array([0.05, -0.07, -0.07], dtype=np.float32) * np.float32(rng.uniform(0.5, 1.2))
    hair_rgb = (hair_col * rng.uniform(0.6, 1.0)).astype(np.float32)  # body/facial hair, a little darker
    if hair_shell is not None:
        strands = 0.6 * _noise(rng, (s, s), (max(8, s // 3), 5)) + 0.4 * _noise(
            rng, (s, s), (max(8, s // 8), 3)
        )
        factor *= 1.0 + 0.45 * strands * hair_a
    hair_w = hair_a * alpha
    face = premult + (hair_rgb * hair_w[..., None] - premult * hair_a[..., None])  # hair albedo where hairy
    face *= (factor[..., None] * (1.0 + red[..., None] * tint)).astype(np.float32)
    face += (spec * 0.8 * alpha)[..., None]
    for c in catch:
        cx, cy = int(c[0]), int(c[1])
        if 0 <= cx < s and 0 <= cy < s:
            face[cy, cx] = face[cy, cx] * 0.3 + 190 * alpha[cy, cx]

    bg = _background(rng, s)
    bg *= (1.0 - alpha)[..., None]
    out = bg + face  # premultiplied face over the background
    # Auto-exposure: cameras meter on the face, so a dark face in dim light is brightened (and a
    # bright one dimmed) towards a random target; the skin tone still sets the face's relative level.
    inner = alpha > 0.99
    if inner.any():
        lum = float((face[inner] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
        base = float(skin @ np.array([0.299, 0.587, 0.114]))  # the albedo's own luminance
        target = base * rng.uniform(0.5, 0.75) + 255 * rng.uniform(0.02, 0.08)
        out *= np.float32(np.clip(target / max(lum, 1.0), 0.8, 1.8))

    pts68c = (pts68 + centre).astype(np.float32)
    pts19c = (pts19 + centre).astype(np.float32)

    # --- occluders
    occluded = ""
    if rng.random() < opt.glasses_prob:
        out = _glasses(rng, out, pts68c)
    if rng.random() < opt.occlusion_prob:
        out, occluded = _occluder(rng, out, pts68c, skin)

    # --- camera effects
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    # Colour cast, contrast and gamma through one lookup table per channel.
    gamma = rng.uniform(0.8, 1.2)
    contrast = rng.uniform(0.8, 1.15)
    ramp = np.arange(256, dtype=np.float64) / 255.0
    tables = []
    for gain in rng.normal(1.0, 0.035, 3):
        v = np.clip((ramp**gamma - 0.5) * contrast + 0.5, 0, 1) * gain
        tables.extend(np.clip(v * 255, 0, 255).astype(np.uint8).tolist())
    img = img.point(tables)
    if rng.random() < opt.lowres_prob:
        f = rng.uniform(0.3, 0.7)
        small = (max(8, int(s * f)), max(8, int(s * f)))
        img = img.resize(small, Image.Resampling.BILINEAR).resize((s, s), Image.Resampling.BILINEAR)
    if rng.random() < opt.blur_prob:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.4, 1.5) * s / 256))
    if rng.random() < opt.noise_prob:
        sigma = rng.uniform(1.0, 8.0)
        noisy = np.asarray(img, dtype=np.float32) + (_grain(rng, s) * sigma)[..., None]
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < opt.jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(25, 95)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    image = np.asarray(img, dtype=np.uint8).copy()
    meta: dict[str, Any] = {
        "yaw": float(yaw),
        "pitch": float(pitch),
        "roll": float(roll),
        "hair": str(hair_style),
        "occluder": occluded,
        **{k2: round(v2, 4) for k2, v2 in expr.items()},
    }
    materials = mat_big if keep_materials else None
    labels68c = (labels68 + centre).astype(np.float32)
    return RenderedFace(image=image, points68=labels68c, points19=pts19c, meta=meta, materials=materials)


class _Layer:
    """An RGBA overlay drawn at 2x as premultiplied RGB plus an alpha mask (both reduce quickly)."""

    def __init__(self, s: int) -> None:
        self.rgb = Image.new("RGB", (s * SS, s * SS), (0, 0, 0))
        self.alpha = Image.new("L", (s * SS, s * SS), 0)
        self._c = ImageDraw.Draw(self.rgb)
        self._a = ImageDraw.Draw(self.alpha)

    @staticmethod
    def _split(fill: tuple[int, ...]) -> tuple[tuple[int, int, int], int]:
        a = fill[3] if len(fill) > 3 else 255
        return (fill[0] * a // 255, fill[1] * a // 255, fill[2] * a // 255), a

    def polygon(self, xy: Sequence[tuple[float, float]], fill: tuple[int, ...]) -> None:
        c, a = self._split(fill)
        self._c.polygon(list(xy), fill=c)
        self._a.polygon(list(xy), fill=a)

    def ellipse(self, box: tuple[float, float, float, float], fill: tuple[int, ...]) -> None:
        c, a = self._split(fill)
        self._c.ellipse(box, fill=c)
        self._a.ellipse(box, fill=a)

    def line(self, xy: Sequence[tuple[float, float]], fill: tuple[int, ...], width: int) -> None:
        c, a = self._split(fill)
        self._c.line(list(xy), fill=c, width=width, joint="curve")
        self._a.line(list(xy), fill=a, width=width, joint="curve")

    def over(self, out: np.ndarray, texture: np.ndarray | None = None) -> np.ndarray:
        """Composite over the float image [S, S, 3]; ``texture`` [S, S] multiplies the layer's colour."""
        rgb = np.asarray(self.rgb.reduce(SS), dtype=np.float32)
        a = np.asarray(self.alpha.reduce(SS), dtype=np.float32)[..., None] * (1.0 / 255.0)
        if texture is not None:
            rgb = rgb * texture[..., None]
        return np.asarray(out * (1.0 - a) + rgb, dtype=np.float32)


def _glasses(rng: np.random.Generator, out: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Spectacles or sunglasses over both eyes (frames follow the eye line)."""
    s = out.shape[0]
    draw = _Layer(s)
    sun = rng.random() < 0.35
    frame = tuple(int(c) for c in rng.uniform(0, 120, 3)) + (255,)
    lens = (*(int(c) for c in rng.uniform(5, 50, 3)), int(rng.uniform(190, 245)))
    width = max(1, round(rng.uniform(0.6, 2.0) * SS * s / 256))
    eye_r, eye_l = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    axis = eye_l - eye_r
    io_dist = float(np.linalg.norm(axis))
    if io_dist < 1e-3:
        return out
    ex = axis / io_dist
    ey = np.array([-ex[1], ex[0]])
    half_w, half_h = io_dist * rng.uniform(0.36, 0.46), io_dist * rng.uniform(0.22, 0.32)
    ang = np.linspace(0, 2 * np.pi, 25)[:-1]
    rings = []
    for c in (eye_r, eye_l):
        cc = c + ey * io_dist * 0.04
        sq = (
            np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** 0.6,
            np.sign(np.sin(ang)) * np.abs(np.sin(ang)) ** 0.6,
        )
        ring = cc + np.outer(sq[0] * half_w, ex) + np.outer(sq[1] * half_h, ey)
        rings.append([(float(u) * SS - 0.5, float(v) * SS - 0.5) for u, v in ring])
    for ring in rings:
        if sun:
            draw.polygon(ring, fill=lens)
        draw.line([*ring, ring[0]], fill=frame, width=width)
    bridge = [rings[0][0], rings[1][len(ang) // 2]]
    draw.line(bridge, fill=frame, width=width)
    for ring, jaw in ((rings[0], pts[0]), (rings[1], pts[16])):
        start = ring[len(ang) // 2] if ring is rings[0] else ring[0]
        draw.line([start, (float(jaw[0]) * SS - 0.5, float(jaw[1]) * SS - 0.5)], fill=frame, width=width)
    return draw.over(out)


def _occluder(rng: np.random.Generator, out: np.ndarray, pts: np.ndarray, skin: np.ndarray
              ) -> tuple[np.ndarray, str]:  # fmt: skip
    """A hand, a microphone or a random textured object over part of the face."""
    s = out.shape[0]
    draw = _Layer(s)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = float(max(hi - lo))
    target = pts[int(rng.integers(len(pts)))] * SS
    kind = str(rng.choice(["hand", "object", "microphone"], p=[0.4, 0.45, 0.15]))
    if kind == "hand":
        tone = skin * rng.normal(1.0, 0.08, 3)
        col = (*(int(c) for c in np.clip(tone, 0, 255)), 255)
        r = size * SS * rng.uniform(0.18, 0.28)
        direction = rng.uniform(0, 2 * np.pi)
        palm = target - r * 1.2 * np.array([np.cos(direction), np.sin(direction)])
        draw.ellipse((palm[0] - r, palm[1] - r * 1.1, palm[0] + r, palm[1] + r * 1.1), fill=col)
        for f in range(4):
            off = (f - 1.5) * 0.45 * r
            perp = np.array([-np.sin(direction), np.cos(direction)])
            base = palm + perp * off
            tip = base + r * rng.uniform(1.3, 1.9) * np.array([np.cos(direction), np.sin(direction)])
            draw.line([tuple(base), tuple(tip)], fill=col, width=max(2, int(r * 0.38)))
            draw.ellipse(
                (tip[0] - r * 0.19, tip[1] - r * 0.19, tip[0] + r * 0.19, tip[1] + r * 0.19), fill=col
            )
        # The arm, out of the picture.
        draw.line([tuple(palm), tuple(palm - 4 * r * np.array([np.cos(direction), np.sin(direction)]))],
                  fill=col, width=int(r * 1.4))  # fmt: skip
    elif kind == "microphone":
        col = (*(int(c) for c in rng.uniform(10, 90, 3)), 255)
        r = size * SS * rng.uniform(0.08, 0.14)
        draw.line([tuple(target), (float(target[0] + rng.normal(0, r)), float(s * SS * 1.2))], fill=col,
                  width=int(r * 0.7))  # fmt: skip
        draw.ellipse((target[0] - r, target[1] - r, target[0] + r, target[1] + r), fill=col)
    else:
        col = (*(int(c) for c in rng.uniform(0, 255, 3)), 255)
        w, h = size * SS * rng.uniform(0.2, 0.6, 2)
        ang = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ rot.T + target
        if rng.random() < 0.5:
            draw.polygon([tuple(c) for c in corners], fill=col)
        else:
            draw.ellipse(
                (target[0] - w / 2, target[1] - h / 2, target[0] + w / 2, target[1] + h / 2), fill=col
            )
    shade = 1.0 + 0.15 * _noise(rng, (s, s), (6, 6)) + 0.05 * _noise(rng, (s, s), (40, 40))
    return draw.over(out, shade), kind
