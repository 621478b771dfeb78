"""Scan renders (train.data.scan): readers, rasteriser, exact labels, the dataset.

Fixture meshes are written by the tests; the tests on menpo3d's real 'james' scan run only when its
sdist (or the extracted files) is in the repository's cache, and skip otherwise, CI included: the
scan is fetched from PyPI and never committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store.meanshape import MEAN_SHAPE_68
from train.data.face3d import rotation_matrix
from train.data.scan import (
    PIVOT,
    SCAN_SOURCE,
    Camera,
    Lighting,
    ScanFaces,
    ScanModel,
    ScanOptions,
    ensure_scan_files,
    ibug68_order,
    load_scan,
    read_ljson,
    read_obj,
    render_mesh,
    render_scan,
)
from train.data.synthetic import PoseDistribution
from train.dataset import load_samples

REPO = Path(__file__).resolve().parents[3]
FLAT = Lighting(ambient=1.0, diffuse=0.0)
CLEAN = ScanOptions(blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)

# The file order of menpo's face label groups (as in james.ljson) and their iBUG ranges.
MENPO_ORDER = [
    ("chin", range(0, 17)),
    ("leye", range(36, 42)),
    ("reye", range(42, 48)),
    ("leyebrow", range(17, 22)),
    ("nose", range(27, 36)),
    ("reyebrow", range(22, 27)),
    ("mouth", range(48, 68)),
]


def checkerboard(cells: int = 4, texels: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """([cells * texels]^2 x 3 uint8 texture, [cells, cells, 3] colour of each cell (row from the top))."""
    colours = np.random.default_rng(3).integers(20, 235, (cells, cells, 3)).astype(np.uint8)
    return np.repeat(np.repeat(colours, texels, axis=0), texels, axis=1), colours


def quad_model(texture: np.ndarray, z: float = 0.0) -> ScanModel:
    """A unit square at depth z facing the camera; uv = (x + 0.5, 0.5 - y) (the texture upright)."""
    v = np.array([[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # positive area in pixels (y down)
    uv = np.stack([v[:, 0] + 0.5, 0.5 - v[:, 1]], axis=1)[faces]
    normals = np.tile([0.0, 0.0, 1.0], (4, 1))
    return ScanModel(v, normals, faces, uv, texture, np.zeros((68, 3)))


def write_fixture_scan(root: Path) -> Path:
    """james.obj/.obj.mtl/.ljson + a PNG texture: a pyramid (y up, mm) looking to +z and the mean
    shape's 68 points in the same frame, stored in menpo's label-group order."""
    root.mkdir(parents=True, exist_ok=True)
    obj = [
        "mtllib james.obj.mtl",
        "v -90 110 -30",
        "v 90 110 -30",
        "v 90 -110 -30",
        "v -90 -110 -30",
        "v 0 0 60",
        "vt 0 1",
        "vt 1 1",
        "vt 1 0",
        "vt 0 0",
        "vt 0.5 0.5",
        "f 1/1 5/5 2/2",
        "f 2/2 5/5 3/3",
        "f -3/-3 -1/-1 -2/-2",  # 3 5 4: counter-clockwise seen from +z like the others
        "f 4/4 5/5 1/1",
    ]
    (root / "james.obj").write_text("\n".join(obj) + "\n")
    (root / "james.obj.mtl").write_text("newmtl material_0\nmap_Kd tex.png\n")
    Image.fromarray(checkerboard()[0]).save(root / "tex.png")
    lm = MEAN_SHAPE_68 * np.array([100.0, -100.0, 100.0])
    points: list[list[float]] = []
    labels = []
    for name, ibug in MENPO_ORDER:
        labels.append({"label": name, "mask": list(range(len(points), len(points) + len(ibug)))})
        points.extend(lm[list(ibug)].tolist())
    ljson = {"version": 3, "groups": {"LJSON": {"labels": labels, "landmarks": {"points": points}}}}
    (root / "james.ljson").write_text(json.dumps(ljson))
    return root


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture_scan(tmp_path_factory.mktemp("scan"))


# ---------------------------------------------------------------------------------------- readers
def test_read_obj_index_forms_and_texcoords(tmp_path):
    text = "\n".join(
        [
            "# comment",
            "v 0 0 0",
            "v 1 0 0",
            "v 1 1 0",
            "v 0 1 0",
            "vt 0.1 0.2",
            "vt 0.3 0.4",
            "vt 0.5 0.6",
            "vn 0 0 1",
            "f 1/3 2/2 3/1",
            "f -4/-1 -3/-2 -1/-3",
            "f 1//1 2//1 4//1",
            "f 2/1/1 3/2/1 4/3/1",
            "f 1 2 3 4",
        ]
    )
    (tmp_path / "m.obj").write_text(text)
    mesh = read_obj(tmp_path / "m.obj")
    assert mesh.vertices.shape == (4, 3) and mesh.texcoords.shape == (3, 2)
    np.testing.assert_array_equal(
        mesh.faces, [[0, 1, 2], [0, 1, 3], [0, 1, 3], [1, 2, 3], [0, 1, 2], [0, 2, 3]]
    )
    np.testing.assert_array_equal(
        mesh.face_tex, [[2, 1, 0], [2, 1, 0], [-1, -1, -1], [0, 1, 2], [-1, -1, -1], [-1, -1, -1]]
    )
    np.testing.assert_allclose(mesh.texcoords[mesh.face_tex[0]], [[0.5, 0.6], [0.3, 0.4], [0.1, 0.2]])


def test_read_ljson_v2_v3_nulls_and_ibug_order(tmp_path):
    (tmp_path / "v2.ljson").write_text(json.dumps({"landmarks": {"points": [[1, 2, 3], None, [4, None, 6]]}}))
    pts, labels = read_ljson(tmp_path / "v2.ljson")
    assert pts.shape == (3, 3) and labels == {}
    assert np.isnan(pts[1]).all() and np.isnan(pts[2, 1]) and pts[2, 2] == 6
    root = write_fixture_scan(tmp_path / "fx")
    pts, labels = read_ljson(root / "james.ljson")
    order = ibug68_order(labels)
    assert sorted(order.tolist()) == list(range(68))
    np.testing.assert_allclose(pts[order], MEAN_SHAPE_68 * [100, -100, 100])
    np.testing.assert_array_equal(ibug68_order({}), np.arange(68))
    with pytest.raises(ValueError):
        ibug68_order({}, num=51)


def test_fixture_scan_lands_in_the_head_frame(fixture_root):
    model = load_scan(fixture_root)
    np.testing.assert_allclose(model.landmarks, MEAN_SHAPE_68, atol=1e-9)  # y flipped, mm -> units
    np.testing.assert_allclose(model.vertices[4], [0.0, 0.0, 0.6], atol=1e-9)  # the apex
    assert model.texture.shape == (64, 64, 3)
    assert (model.normals[4] @ [0, 0, 1]) > 0.99  # outwards, towards the camera


# --------------------------------------------------------------------------------------- renderer
@pytest.mark.parametrize("yaw", [0.0, 40.0])
def test_texture_colour_at_the_projected_surface_point(yaw):
    tex, colours = checkerboard()
    model = quad_model(tex)
    cam = Camera(dist=3.0, px_per_unit=100.0, centre=(64.0, 64.0))
    rot = rotation_matrix(yaw, 10.0, 5.0)
    image, alpha = render_mesh(model, rot, cam, 128, FLAT)
    for row, col in [(1, 1), (2, 0), (0, 3), (3, 2)]:
        u, v = (col + 0.5) / 4, 1.0 - (row + 0.5) / 4  # the centre of a cell
        point = np.array([u - 0.5, 0.5 - v, 0.0])
        x, y = cam.project((point - PIVOT) @ rot.T + PIVOT)
        assert alpha[int(y), int(x)] == 1.0
        np.testing.assert_allclose(image[int(y), int(x)], colours[row, col], atol=1.0)
    assert alpha[0, 0] == 0.0 and alpha[127, 127] == 0.0


def test_the_nearer_triangle_wins_whatever_the_order():
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[:, 0] = (255, 0, 0)
    tex[:, 1] = (0, 0, 255)
    near = np.array([[-0.5, -0.5, 0.2], [0.5, -0.5, 0.2], [0.0, 0.5, 0.2]])
    far = near * [1.2, 1.2, -1.0]
    for first_near in (True, False):
        verts = np.concatenate([near, far] if first_near else [far, near])
        faces = np.array([[0, 1, 2], [3, 4, 5]])
        uv = np.zeros((2, 3, 2))
        uv[:, :, 1] = 0.5
        uv[0 if first_near else 1, :, 0] = 0.25  # red on the near one
        uv[1 if first_near else 0, :, 0] = 0.75  # blue on the far one
        model = ScanModel(verts, np.tile([0.0, 0, 1], (6, 1)), faces, uv, tex, np.zeros((68, 3)))
        image, alpha = render_mesh(model, np.eye(3), Camera(4.0, 40.0, (32.0, 32.0)), 64, FLAT)
        np.testing.assert_allclose(image[32, 32], [255, 0, 0], atol=1)
        assert alpha[32, 32] == 1.0


def test_back_faces_are_culled():
    model = quad_model(checkerboard()[0])
    flipped = ScanModel(model.vertices, model.normals, model.faces[:, ::-1], model.uv[:, ::-1],
                        model.texture, model.landmarks)  # fmt: skip
    _, alpha = render_mesh(flipped, np.eye(3), Camera(3.0, 100.0, (64.0, 64.0)), 128, FLAT)
    assert alpha.max() == 0.0
    _, alpha = render_mesh(model, rotation_matrix(180, 0, 0), Camera(3.0, 100.0, (64.0, 64.0)), 128, FLAT)
    assert alpha.max() == 0.0


@pytest.mark.parametrize("perspective", [True, False])
def test_landmarks_are_the_analytic_projection(fixture_root, perspective):
    model = load_scan(fixture_root)
    yaw, pitch, roll = 35.0, -12.0, 8.0
    opt = ScanOptions(perspective=perspective)
    face = render_scan(np.random.default_rng(5), model, 128, yaw, pitch, roll, opt, geometry_only=True)
    dist, ppu, cx, cy = face.meta["camera"]
    assert face.meta["yaw"] == yaw and face.meta["pitch"] == pitch and face.meta["roll"] == roll
    p = (MEAN_SHAPE_68 - PIVOT) @ rotation_matrix(yaw, pitch, roll).T + PIVOT
    q = dist / (dist - p[:, 2:]) if perspective else 1.0
    assert np.isinf(dist) != perspective
    expected = p[:, :2] * q * ppu + [cx, cy]
    np.testing.assert_allclose(face.points68, expected, atol=1e-3)
    # a full render from the same rng state gives the same labels
    full = render_scan(np.random.default_rng(5), model, 128, yaw, pitch, roll, opt)
    np.testing.assert_array_equal(full.points68, face.points68)
    assert full.image.shape == (128, 128, 3) and full.points19.shape == (19, 2)


# ---------------------------------------------------------------------------------------- dataset
def test_scan_faces_deterministic_cached_and_posed(fixture_root, tmp_path):
    pose = PoseDistribution.uniform_yaw(60.0)
    a = ScanFaces("ibug68", 3, seed=7, image_size=64, pose=pose, root=fixture_root, cache_dir=tmp_path)
    b = ScanFaces("ibug68", 3, seed=7, image_size=64, pose=pose, root=fixture_root)
    s0, t0 = a[1], b[1]
    np.testing.assert_array_equal(s0.image, t0.image)
    np.testing.assert_array_equal(s0.points, t0.points)
    assert s0.points.shape == (68, 2) and s0.image.shape == (64, 64, 3) and s0.scheme == "ibug68"
    assert s0.meta["subset"] == "scan-ibug68" and s0.meta["index"] == 1
    assert s0.meta["yaw"] == pytest.approx(a.poses()[1, 0])
    assert not np.array_equal(a[0].image, a[1].image)
    cached = list(tmp_path.rglob("*.npz"))
    assert len(cached) == 2
    again = ScanFaces("ibug68", 3, seed=7, image_size=64, pose=pose, root=fixture_root, cache_dir=tmp_path)
    np.testing.assert_array_equal(again[1].image, s0.image)
    assert again[1].meta == s0.meta
    np.testing.assert_allclose(a.shapes()[1], s0.points)
    c = ScanFaces("aflw19", 3, seed=7, image_size=64, pose=pose, root=fixture_root)
    assert c[1].points.shape == (19, 2) and c[-1].meta["index"] == 2
    with pytest.raises(IndexError):
        c[3]


def test_load_samples_kind_scan(fixture_root):
    spec = {"kind": "scan", "num": 2, "seed": 3, "image_size": 48, "root": str(fixture_root),
            "pose": {"yaw_std": 5.0}, "workers": 1}  # fmt: skip
    samples = load_samples(spec, "aflw19", progress=False)
    assert len(samples) == 2 and all(s.points.shape == (19, 2) for s in samples)
    assert samples[0].meta["subset"] == "scan-aflw19"


# ----------------------------------------------------------------------------- the real 'james' scan
def _real_scan_root(tmp_path: Path) -> Path:
    extracted = REPO / "cache" / "scan"
    if (extracted / "james.obj").is_file() and (extracted / "james.ljson").is_file():
        return extracted
    downloads = REPO / "cache" / "real" / "downloads"
    if not list(downloads.glob(SCAN_SOURCE.archive_glob)):
        pytest.skip("menpo3d sdist not in cache/real/downloads (fetched by 'wingmark data real')")
    return ensure_scan_files(tmp_path / "scan", downloads)


def test_real_james_scan(tmp_path):
    model = load_scan(_real_scan_root(tmp_path))
    assert model.faces.shape == (12228, 3) and model.vertices.shape == (6393, 3)
    lm = model.landmarks
    # on the surface: within ~0.04 units (~4 mm) of a vertex
    near = np.sqrt(((lm[:, None] - model.vertices[None]) ** 2).sum(-1)).min(axis=1)
    assert near.max() < 0.04
    # iBUG order in the head frame: brows above eyes above the nose tip above the mouth above the chin
    assert lm[17:27, 1].mean() < lm[36:48, 1].mean() < lm[33, 1] < lm[48:68, 1].mean() < lm[8, 1]
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0] and lm[0, 0] < 0 < lm[16, 0]
    assert lm[30, 2] == lm[:, 2].max()  # the nose tip is the most forward point
    for yaw in (0.0, 60.0):
        face = render_scan(np.random.default_rng(0), model, 128, yaw, 0.0, 0.0, CLEAN)
        dist, ppu, cx, cy = face.meta["camera"]
        _, alpha = render_mesh(model, rotation_matrix(yaw, 0, 0), Camera(dist, ppu, (cx, cy)), 128, FLAT)
        # the scan covers the visible eye, the nose tip and the mouth at their projected points
        for i in (37, 30, 62) if yaw else (37, 44, 30, 62):  # 44: the far eye at yaw 60
            x, y = face.points68[i].astype(int)
            assert alpha[y, x] == 1.0, (yaw, i)
