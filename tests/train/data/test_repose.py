"""Re-posed real faces (train.data.repose): the geometry on a hand-made hemisphere mesh, the dataset
on the real-cache fixture (tests/fixtures/real, with tests/fixtures/real/repose/mesh3d.npz)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import Delaunay

from model_store.geometry import tight_box
from model_store.meanshape import MEAN_SHAPE_68
from model_store.pose import rotation_from_euler
from train.data.repose import (
    PIVOT_DEPTH,
    ExtendedMesh,
    FaceMesh,
    ReposedFaces,
    ReposeOptions,
    attach,
    extend_mesh,
    mediapipe_topology,
    repose_face,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "real"
MESH3D = FIXTURE / "repose" / "mesh3d.npz"
SIZE = 64  # output pixels; the window is 2x (128)
RADIUS = 40.0  # the hemisphere's radius in window pixels
CENTRE = np.array([64.0, 64.0])


def hemisphere() -> FaceMesh:
    """A hemisphere of RADIUS around CENTRE (z towards the camera): a grid inside the disc plus 72
    rim vertices (z = 0, the rim is the oval), Delaunay-triangulated in the image plane."""
    g = np.linspace(-1, 1, 23)
    xx, yy = np.meshgrid(g, g)
    inner = np.column_stack([xx.ravel(), yy.ravel()])
    inner = inner[np.linalg.norm(inner, axis=1) < 0.94]
    angle = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    rim = np.column_stack([np.cos(angle), np.sin(angle)])
    unit = np.concatenate([inner, rim])
    z = np.sqrt(np.clip(1 - (unit**2).sum(axis=1), 0, None))
    vertices = np.column_stack([CENTRE + unit * RADIUS, z * RADIUS])
    triangles = Delaunay(unit).simplices
    oval = np.arange(len(inner), len(unit))
    return FaceMesh(vertices, np.asarray(triangles, dtype=np.int64), oval)


def toy_labels() -> np.ndarray:
    """[68, 2] window pixels: the mean face's 68 points scaled into the disc, the jaw pushed out
    radially to 0.97 of the radius (on the silhouette, as a frontal photo's jaw is labelled)."""
    pts = MEAN_SHAPE_68[:, :2] - MEAN_SHAPE_68[:, :2].mean(axis=0)
    pts = pts / np.linalg.norm(pts[:17], axis=1).max() * 0.8 * RADIUS
    pts[:17] *= 0.97 * RADIUS / np.linalg.norm(pts[:17], axis=1, keepdims=True)
    return np.asarray(pts + CENTRE)


def coordinate_window() -> np.ndarray:
    """[128, 128, 3] uint8 whose colour encodes where it is: R = 2x, G = 2y (pixel centres), B = 0."""
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    return np.stack([2 * xs, 2 * ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def expected_pivot(mesh: FaceMesh) -> np.ndarray:
    width = 2 * RADIUS  # the rim's diameter
    return np.asarray(mesh.vertices.mean(axis=0) - [0.0, 0.0, PIVOT_DEPTH * width])


def test_topology_is_mediapipe_canonical_and_a_disc() -> None:
    triangles, oval = mediapipe_topology()
    assert triangles.shape == (898, 3) and triangles.min() == 0 and triangles.max() == 467
    assert len(oval) == 36 and len(set(oval.tolist())) == 36
    edges: dict[tuple[int, int], int] = {}
    for a, b, c in triangles.tolist():
        for u, v in ((a, b), (b, c), (c, a)):
            edges[(u, v)] = edges.get((u, v), 0) + 1
    # consistent winding: no directed edge twice; boundary (undirected edges used once) = the oval
    assert max(edges.values()) == 1
    undirected: dict[tuple[int, int], int] = {}
    for u, v in edges:
        undirected[(min(u, v), max(u, v))] = undirected.get((min(u, v), max(u, v)), 0) + 1
    boundary = sorted({v for e, n in undirected.items() if n == 1 for v in e})
    assert boundary == sorted(oval.tolist())
    licence = json.loads(
        (Path(__file__).resolve().parents[3] / "train/data/mediapipe_face_topology.json").read_text()
    )
    assert "Apache-2.0" in licence["licence"]


def test_attach_finds_the_front_triangle_and_reproduces_the_point() -> None:
    ext = extend_mesh(hemisphere())
    pts = toy_labels()
    tri, bary = attach(pts, ext)
    assert np.all(bary >= -1e-9) and np.allclose(bary.sum(axis=1), 1.0)
    back = (ext.vertices[ext.triangles[tri]][..., :2] * bary[..., None]).sum(axis=1)
    assert np.allclose(back, pts, atol=1e-9)
    # a point just outside the rim lands on ring 1 (not on the face) and still reproduces
    out = CENTRE + [RADIUS * 1.1, 0.0]
    t2, b2 = attach(out[None], ext)
    assert t2[0] >= ext.num_face_triangles
    assert np.allclose((ext.vertices[ext.triangles[t2[0]], :2] * b2[0][:, None]).sum(axis=0), out)


def test_attach_takes_the_nearer_of_two_layers() -> None:
    """Where the photo shows two surfaces at one point (a nose over a cheek), the label belongs to the
    one in front; a back-facing triangle never takes it."""
    far = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]]
    near = [[0.0, 0.0, 5.0], [10.0, 0.0, 5.0], [0.0, 10.0, 5.0]]
    behind = [[0.0, 0.0, 9.0], [0.0, 10.0, 9.0], [10.0, 0.0, 9.0]]  # nearest, but wound backwards
    verts = np.asarray(far + near + behind)
    tris = np.asarray([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    ext = ExtendedMesh(verts, tris, np.zeros(9, dtype=bool), 3, 9)
    tri, bary = attach(np.asarray([[2.0, 3.0]]), ext)
    assert tri[0] == 1 and np.allclose(bary[0], [0.5, 0.2, 0.3])
    ext_swapped = ExtendedMesh(verts, tris[[1, 0, 2]], np.zeros(9, dtype=bool), 3, 9)
    assert attach(np.asarray([[2.0, 3.0]]), ext_swapped)[0][0] == 0


def test_identity_rotation_reproduces_the_photo_and_labels() -> None:
    window = coordinate_window()
    pts = toy_labels()
    out = repose_face(window, hemisphere(), pts, np.eye(3), SIZE)
    assert np.allclose(out.points, pts / 2, atol=1e-6)
    expected = window.astype(np.float64).reshape(SIZE, 2, SIZE, 2, 3).mean(axis=(1, 3))
    assert np.abs(out.image.astype(np.float64) - expected).max() <= 1.5


def test_a_known_rotation_gives_the_known_projection() -> None:
    mesh = hemisphere()
    # labels at mesh vertices: their 3-D position is known exactly
    chosen = np.linspace(0, len(mesh.vertices) - 80, 68).astype(int)
    pts = mesh.vertices[chosen, :2]
    rot = rotation_from_euler(35.0, -20.0, 10.0)
    out = repose_face(coordinate_window(), mesh, pts, rot, SIZE)  # no jaw marching
    pivot = expected_pivot(mesh)
    want = ((mesh.vertices[chosen] - pivot) @ rot.T + pivot)[:, :2] / 2
    assert np.allclose(out.points, want, atol=1e-6)


def test_labels_move_with_the_surface() -> None:
    """The coordinate texture says where each rendered pixel came from in the photo: at every
    visible label's new position it must name the label's old position."""
    window = coordinate_window()
    pts = toy_labels()
    rot = rotation_from_euler(30.0, 10.0, 0.0)
    out = repose_face(window, hemisphere(), pts, rot, SIZE)
    # visible: the sphere's normal at the label, turned, still faces the camera
    unit = (pts - CENTRE) / RADIUS
    normals = np.column_stack([unit, np.sqrt(np.clip(1 - (unit**2).sum(axis=1), 0, None))]) @ rot.T
    checked = 0
    for old, new, n in zip(pts, out.points, normals, strict=True):
        if n[2] < 0.3:
            continue
        # bilinear around the label: sample the four neighbours weighted as the label's fraction
        fx, fy = new[0] - 0.5 - int(new[0] - 0.5), new[1] - 0.5 - int(new[1] - 0.5)
        x0, y0 = int(new[0] - 0.5), int(new[1] - 0.5)
        patch = out.image[y0 : y0 + 2, x0 : x0 + 2].astype(np.float64)
        colour = (
            patch[0, 0] * (1 - fx) * (1 - fy)
            + patch[0, 1] * fx * (1 - fy)
            + patch[1, 0] * (1 - fx) * fy
            + patch[1, 1] * fx * fy
        )
        came_from = colour[:2] / 2  # window pixels
        assert np.linalg.norm(came_from - old) < 2.0, (old, came_from)
        checked += 1
    assert checked >= 40


def test_jaw_on_the_far_side_follows_the_contour_at_60_degrees() -> None:
    mesh = hemisphere()
    pts = toy_labels()
    yaw = 60.0
    rot = rotation_from_euler(yaw, 0.0, 0.0)
    hidden = tuple(range(9, 17))
    out = repose_face(coordinate_window(), mesh, pts, rot, SIZE, hidden_jaw=hidden)
    carried = repose_face(coordinate_window(), mesh, pts, rot, SIZE)  # without marching
    pivot = expected_pivot(mesh)
    centre = (np.append(CENTRE, 0.0) - pivot) @ rot.T + pivot  # the sphere's centre, turned
    for j in hidden:
        x, y = out.points[j] * 2  # window pixels
        # the sphere's limb at this height (orthographic): centre_x + sqrt(r^2 - dy^2)
        dy = y - centre[1]
        limb = centre[0] + np.sqrt(RADIUS**2 - dy**2)
        assert abs(x - limb) < 0.03 * RADIUS, (j, x, limb)
        # and on the rendered face's silhouette: face just inside, none just outside
        px, py = out.points[j]
        assert out.face_mask[int(py), int(px - 2)] > 0.5
        assert out.face_mask[int(py), min(int(px + 2), SIZE - 1)] < 0.5
        # carried without marching the point would sit on the far side, inside the outline
        assert carried.points[j][0] <= px + 1e-4
    moved = np.linalg.norm(out.points[list(hidden)] - carried.points[list(hidden)], axis=1)
    assert (moved > 2.0).sum() >= 5  # most of the far jaw had turned behind the face
    # the near side is carried, not marched
    assert np.allclose(out.points[:8], carried.points[:8])


def test_repose_spec_on_the_fixture(tmp_path: Path) -> None:
    from train.dataset import load_samples

    spec = {
        "kind": "repose",
        "root": str(FIXTURE),
        "mesh3d": str(MESH3D),
        "per_face": 3,
        "seed": 5,
        "image_size": 48,
        "cache_dir": str(tmp_path),
        "workers": 1,
    }
    samples = load_samples(spec, "ibug68", progress=False)
    assert len(samples) == 6  # two training faces with a mesh, three renders each
    assert {s.meta["id"] for s in samples} == {"alpha/a1_1", "alpha/a2_1"}  # never the test faces
    assert all(s.meta["split"] == "train" for s in samples)
    for s in samples:
        assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8
        assert s.points.shape == (68, 2) and np.isfinite(s.points).all()
        assert abs(s.meta["yaw"]) <= 75.0 and abs(s.meta["pitch"]) <= 30.0
        # the face stays inside the window
        assert (s.points > -4).all() and (s.points < 52).all()
    assert len({round(s.meta["yaw"], 3) for s in samples}) == 6
    # cached, deterministic, and the same from the cache
    assert len(list(tmp_path.rglob("*.npz"))) == 6
    again = ReposedFaces.from_spec({**spec, "cache_dir": None}, "ibug68")
    fresh = again[4]
    assert np.array_equal(fresh.image, samples[4].image) and np.allclose(fresh.points, samples[4].points)
    # aflw19 from the same renders
    s19 = load_samples({**spec, "per_face": 1}, "aflw19", progress=False)
    assert s19[0].points.shape == (19, 2) and s19[0].scheme == "aflw19"


def test_outward_targets_are_no_less_turned_than_the_photo() -> None:
    opt = ReposeOptions(yaw_max=75.0, pitch_max=30.0)
    rng = np.random.default_rng(0)
    draws = np.array([opt.draw(rng, 40.0) for _ in range(300)])
    assert (np.abs(draws[:, 0]) >= 40.0).all() and (np.abs(draws[:, 0]) <= 75.0).all()
    assert (draws[:, 0] > 0).any() and (draws[:, 0] < 0).any()
    assert (np.abs(draws[:, 1]) <= 30.0).all()
    free = ReposeOptions(outward=False)
    assert (np.abs(np.array([free.draw(rng, 40.0) for _ in range(300)])[:, 0]) < 40.0).any()


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_face"):
        ReposedFaces("ibug68", FIXTURE, MESH3D, 0, 0)
    with pytest.raises(ValueError, match="ibug68"):
        ReposedFaces("wflw98", FIXTURE, MESH3D, 1, 0)
    with pytest.raises(ValueError, match="window"):
        repose_face(np.zeros((10, 10, 3), np.uint8), hemisphere(), toy_labels(), np.eye(3), SIZE)


def test_cli_reuses_the_meshes_and_writes_a_preview(tmp_path: Path) -> None:
    """``wingmark data repose``: every training face already has a mesh, so MediaPipe is not needed;
    the report is JSON and the preview a JPEG with one row per face and one column per target + 1."""
    import shutil

    from PIL import Image

    from tools.data import main
    from train.data.repose import PREVIEW_TARGETS, write_preview

    out = tmp_path / "repose"
    out.mkdir()
    shutil.copy(MESH3D, out / "mesh3d.npz")
    assert main(["repose", "--cache-dir", str(FIXTURE), "--out", str(out)]) == 0
    report = json.loads((out / "mesh3d.npz.json").read_text())
    assert report["train_faces"] == 2 and report["with_mesh"] == 2
    with np.load(out / "mesh3d.npz") as z:  # the test faces' meshes (in the fixture file) are dropped
        assert sorted(str(i) for i in z["ids"]) == ["alpha/a1_1", "alpha/a2_1"]
    grid = write_preview(FIXTURE, out / "mesh3d.npz", tmp_path / "grid.jpg", faces=[0, 1], size=40)
    with Image.open(grid) as im:
        assert im.format == "JPEG" and im.size == ((len(PREVIEW_TARGETS) + 1) * 40, 2 * 40)


def test_max_faces_takes_identities_in_turn() -> None:
    from train.data.repose import _balanced

    items = list(range(10))
    groups = ["a"] * 6 + ["b"] * 3 + ["c"]
    assert _balanced(items, groups, 4) == [0, 1, 6, 9]
    assert _balanced(items, groups, 7) == [0, 1, 2, 6, 7, 8, 9]
    capped = ReposedFaces("ibug68", FIXTURE, MESH3D, 2, 0, image_size=40, max_faces=1)
    assert len(capped) == 2 and capped.face_ids() == ["alpha/a1_1"]


def test_window_maps_the_photo_and_fills_outside_it_without_black() -> None:
    from train.data.repose import _window

    ys, xs = np.mgrid[0:90, 0:120] + 0.5
    photo = np.stack([xs * 2, ys * 2, np.full_like(xs, 200)], axis=-1).astype(np.uint8)
    pts = np.asarray([[10.0, 20.0], [60.0, 80.0]])  # tight box 50 x 60: the window (120 px) leaves the photo
    window, k, origin = _window(photo, pts, 96)
    assert window.shape == (96, 96, 3)
    assert np.isclose(k, 96 / 120) and np.allclose(origin, [35.0 - 60.0, 50.0 - 60.0])
    # inside the photo: window pixel centre (i + 0.5) / k + origin is the photo position encoded
    for i, j in ((40, 40), (70, 50), (90, 90)):
        x, y = (j + 0.5) / k + origin[0], (i + 0.5) / k + origin[1]
        if 1 < x < 119 and 1 < y < 89:
            assert abs(window[i, j, 0] / 2 - x) < 1.5 and abs(window[i, j, 1] / 2 - y) < 1.5
    # outside it (top-left corner of the window): a fill, never black
    assert window[:5, :5].min() > 0 and (window[:5, :5, 2] > 150).all()


def test_a_target_mirroring_the_photo_pose_is_the_mirrored_photo() -> None:
    """Asked for (-yaw, pitch) of a photo at (yaw, pitch, roll), the photo is mirrored and then not
    turned at all: the render is the mirrored window, the labels mirrored with the flip permutation."""
    from model_store.pose import estimate_pose
    from model_store.schemes import get_scheme
    from train.data.real import RealFaces
    from train.data.repose import _window, load_mesh3d, repose_photo

    face = RealFaces(FIXTURE, "train")[0]
    rows, meshes, _ = load_mesh3d(MESH3D)
    pose = estimate_pose(face.points, "ibug68", face.image.shape[1], face.image.shape[0])
    assert abs(pose.yaw) > 1.0
    out, meta = repose_photo(
        face.image, face.points, meshes[rows[face.meta["id"]]], 48, target=(-pose.yaw, pose.pitch)
    )
    assert meta["mirrored"] is True
    window, k, origin = _window(face.image, face.points.astype(np.float64), 96)
    perm = np.asarray(get_scheme("ibug68").flip_permutation)
    wpts = (face.points.astype(np.float64) - origin) * k
    want = np.column_stack([96 - wpts[perm, 0], wpts[perm, 1]]) / 2
    assert np.allclose(out.points, want, atol=1e-3)
    mirrored = window[:, ::-1].astype(np.float64).reshape(48, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(out.image.astype(np.float64) - mirrored).mean() < 1.0


def test_per_point_weights_follow_the_points(tmp_path: Path) -> None:
    """Where the real cache has per-point teacher weights, a render carries them, permuted with the
    labels when the photo was mirrored, and reduced to 19 for aflw19."""
    from model_store.schemes import get_scheme

    ds = ReposedFaces("ibug68", FIXTURE, MESH3D, 6, 1, image_size=40, cache_dir=tmp_path)
    weights = np.linspace(0.0, 1.0, 68)
    for k in ds.faces:
        ds.real.faces[k].meta["point_weights"] = weights
    perm = np.asarray(get_scheme("ibug68").flip_permutation)
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        want = weights[perm] if s.meta["mirrored"] else weights
        assert np.allclose(s.meta["point_weights"], want, atol=1e-5)
        seen.add(s.meta["mirrored"])
    assert seen == {True, False}
    ds19 = ReposedFaces("aflw19", FIXTURE, MESH3D, 6, 1, image_size=40, cache_dir=tmp_path)
    for k in ds19.faces:
        ds19.real.faces[k].meta["point_weights"] = weights
    assert ds19[0].meta["point_weights"].shape == (19,)


def test_jaw_surface_option_carries_the_far_jaw_instead_of_marching_it() -> None:
    from train.data.real import RealFaces
    from train.data.repose import load_mesh3d, repose_photo

    face = RealFaces(FIXTURE, "train")[0]
    rows, meshes, _ = load_mesh3d(MESH3D)
    mesh = meshes[rows[face.meta["id"]]]
    contour, _ = repose_photo(face.image, face.points, mesh, 48, target=(70.0, 0.0))
    surface, _ = repose_photo(
        face.image, face.points, mesh, 48, target=(70.0, 0.0), options=ReposeOptions(jaw="surface")
    )
    assert np.allclose(contour.points[17:], surface.points[17:]) and np.allclose(
        contour.points[:9], surface.points[:9]
    )
    assert (
        np.abs(contour.points[9:17] - surface.points[9:17]).max() > 0.5
    )  # the far jaw (positive yaw) marched
    assert np.array_equal(contour.image, surface.image)
    with pytest.raises(ValueError, match="jaw"):
        ReposeOptions(jaw="silhouette")
    a = ReposedFaces.from_spec({"root": str(FIXTURE), "mesh3d": str(MESH3D), "jaw": "surface"}, "ibug68")
    b = ReposedFaces.from_spec({"root": str(FIXTURE), "mesh3d": str(MESH3D)}, "ibug68")
    assert a.options.jaw == "surface" and a._key != b._key


def test_the_held_out_split_is_reposed_only_when_asked(tmp_path: Path) -> None:
    """``split: test`` re-poses the held-out people's faces (to evaluate on turned real faces); the default
    stays the training split, and the CLI builds the test meshes in their own file."""
    from tools.data import main
    from train.dataset import load_samples

    spec = {"kind": "repose", "root": str(FIXTURE), "mesh3d": str(MESH3D), "per_face": 2, "seed": 3,
            "image_size": 40, "workers": 1}  # fmt: skip
    held_out = load_samples({**spec, "split": "test"}, "ibug68", progress=False)
    assert {s.meta["id"] for s in held_out} == {"beta/b1_1", "beta/b2_1"}
    assert all(s.meta["split"] == "test" for s in held_out)
    assert {s.meta["id"] for s in load_samples(spec, "ibug68", progress=False)} == {
        "alpha/a1_1",
        "alpha/a2_1",
    }
    with pytest.raises(ValueError, match="split"):
        ReposedFaces("ibug68", FIXTURE, MESH3D, 1, 0, split="val")
    out = tmp_path / "repose-test"
    out.mkdir()
    shutil.copy(MESH3D, out / "mesh3d.npz")  # every face has a mesh: MediaPipe is not needed
    assert main(["repose", "--cache-dir", str(FIXTURE), "--split", "test", "--out", str(out)]) == 0
    report = json.loads((out / "mesh3d.npz.json").read_text())
    assert report["split"] == "test" and report["test_faces"] == 2 and report["with_mesh"] == 2
    with np.load(out / "mesh3d.npz") as z:
        assert sorted(str(i) for i in z["ids"]) == ["beta/b1_1", "beta/b2_1"]


def test_a_known_photo_pose_replaces_the_solved_one() -> None:
    """``photo_pose`` (a render's known pose) is used instead of the pose solved from the labels: asked
    for that same pose, the face is not turned and the labels come back as they were (in the window)."""
    from model_store.pose import estimate_pose
    from train.data.real import RealFaces
    from train.data.repose import _window, load_mesh3d, repose_photo

    face = RealFaces(FIXTURE, "train")[0]
    rows, meshes, _ = load_mesh3d(MESH3D)
    mesh = meshes[rows[face.meta["id"]]]
    solved = estimate_pose(face.points, "ibug68", face.image.shape[1], face.image.shape[0])
    known = (solved.yaw + 10.0, solved.pitch, solved.roll)
    out, meta = repose_photo(face.image, face.points, mesh, 48, target=known[:2], photo_pose=known)
    assert meta["photo_pose"] == [round(v, 2) for v in known] and meta["mirrored"] is False
    _, k, origin = _window(face.image, face.points.astype(np.float64), 96)
    assert np.allclose(out.points, (face.points.astype(np.float64) - origin) * k / 2, atol=1e-3)
    # with the solved pose the same target is a 10-degree turn: the labels move
    turned, _ = repose_photo(face.image, face.points, mesh, 48, target=known[:2])
    assert np.abs(turned.points - out.points).max() > 0.5


def _offsets_report(tmp_path: Path) -> Path:
    """A repose_labels report: at 30 degrees every point is off by +0.1 box in x, at 60 by +0.2 in x and
    -0.1 in y, except point 36 (an outer eye corner), off by +0.3 in x there."""
    at30 = np.tile([0.1, 0.0], (68, 1))
    at60 = np.tile([0.2, -0.1], (68, 1))
    at60[36] = [0.3, -0.1]
    report = {
        "by_target_yaw": {
            "30": {"mean_residual_box": at30.tolist()},
            "60": {"mean_residual_box": at60.tolist()},
        }
    }
    path = tmp_path / "offsets.json"
    path.write_text(json.dumps(report))
    return path


def test_label_offsets_interpolate_in_yaw_and_mirror_for_the_other_side(tmp_path: Path) -> None:
    from model_store.schemes import get_scheme
    from train.data.repose import LabelOffsets

    off = LabelOffsets.from_report(_offsets_report(tmp_path))
    assert list(off.yaws) == [0.0, 30.0, 60.0]  # no turn, no offset
    assert np.allclose(off.at(0.0), 0.0) and np.allclose(off.at(15.0), [0.05, 0.0])
    assert np.allclose(off.at(45.0)[0], [0.15, -0.05]) and np.allclose(off.at(90.0)[36], [0.3, -0.1])
    # turned the other way: the mirror image (x negated), each point taking its mirror point's offset
    twin = int(np.asarray(get_scheme("ibug68").flip_permutation)[36])  # 45, the other outer eye corner
    assert np.allclose(off.at(-60.0)[twin], [-0.3, -0.1]) and np.allclose(off.at(-60.0)[36], [-0.2, -0.1])
    pts = np.zeros((68, 2))
    pts[0], pts[1] = [0.0, 0.0], [40.0, 10.0]  # a 40 x 10 box: size 20
    assert np.allclose(off.correct(pts, 30.0), pts - [2.0, 0.0])


def test_a_spec_with_label_offsets_moves_the_labels_not_the_images(tmp_path: Path) -> None:
    spec = {
        "root": str(FIXTURE),
        "mesh3d": str(MESH3D),
        "per_face": 1,
        "image_size": 40,
        "cache_dir": str(tmp_path),
    }
    plain = ReposedFaces.from_spec(spec, "ibug68")
    fixed = ReposedFaces.from_spec({**spec, "label_offsets": str(_offsets_report(tmp_path))}, "ibug68")
    assert fixed._key == plain._key  # the same cached renders
    for i in range(len(plain)):
        a, b = plain[i], fixed[i]
        assert np.array_equal(a.image, b.image)
        yaw = float(a.meta["yaw"])
        if abs(yaw) > 1.0:
            assert np.abs(a.points - b.points).max() > 0.01
        assert np.allclose(b.box, tight_box(b.points), atol=1e-4)
    with pytest.raises(ValueError, match="ibug68"):
        ReposedFaces.from_spec({**spec, "label_offsets": str(_offsets_report(tmp_path))}, "aflw19")
