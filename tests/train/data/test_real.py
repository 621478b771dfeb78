"""The real-face pipeline's readers, split, clustering, mapping fit and source extraction, on the
committed fixture (tests/fixtures/real: synthetic faces in the cache's format) and small arrays; no
network. The full build is ``wingmark data real`` (docs/real_data.md)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model_store.geometry import CropRule
from train.data.pts300w import read_pts
from train.data.real import (
    RealFaces,
    agreement,
    assign_splits,
    cluster_identities,
    fit_mesh_to_68,
    load_manifest,
    point_weights,
    select_per_identity,
)
from train.data.real_sources import Source, extract_source
from train.data.types import LandmarkDataset

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "real"


def test_reader_yields_kept_faces_of_the_split_with_their_labels():
    test = RealFaces(FIXTURE, "test")
    train = RealFaces(FIXTURE, "train")
    assert isinstance(test, LandmarkDataset)
    assert len(train) == 2 and len(test) == 2  # b3 was dropped (teachers disagree)
    assert len(RealFaces(FIXTURE, "all")) == 4
    sample = test[0]
    assert sample.scheme == "ibug68" and sample.image.shape == (72, 72, 3)
    assert sample.points.shape == (68, 2) and sample.points.dtype == np.float32
    np.testing.assert_allclose(sample.points, read_pts(FIXTURE / "images/beta/b1_1.pts"))
    np.testing.assert_allclose(sample.box, [*sample.points.min(0), *sample.points.max(0)])
    assert sample.meta["source"] == "beta" and sample.meta["identity"] == "person001"
    assert sample.meta["agreement"]["nme"] == pytest.approx(0.052)
    assert [s.meta["id"] for s in RealFaces(FIXTURE, "all", sources=["alpha"])] == [
        "alpha/a1_1",
        "alpha/a2_1",
    ]


def test_fixture_split_keeps_identities_apart():
    faces = load_manifest(FIXTURE)["faces"]
    train = {f["identity"] for f in faces if f["split"] == "train"}
    test = {f["identity"] for f in faces if f["split"] == "test"}
    assert train and test and not train & test


def test_reader_rejects_a_missing_cache_and_a_bad_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="wingmark data real"):
        RealFaces(tmp_path)
    with pytest.raises(ValueError, match="split"):
        RealFaces(FIXTURE, "val")
    bad = tmp_path / "old"
    shutil.copytree(FIXTURE, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["version"] = 0
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="version"):
        RealFaces(bad)


def test_assign_splits_is_by_identity_stable_and_near_the_fraction():
    keys = {f"person{i:03d}": f"src/face{i}_1" for i in range(400)}
    splits = assign_splits(keys, 0.3)
    assert set(splits) == set(keys)
    share = sum(v == "test" for v in splits.values()) / len(splits)
    assert 0.24 < share < 0.36
    # adding identities does not move the existing ones
    more = assign_splits({**keys, "extra": "src/extra_1"}, 0.3)
    assert all(more[k] == v for k, v in splits.items())
    assert set(assign_splits(keys, 0.0).values()) == {"train"}


def test_cluster_identities_joins_close_faces_and_groups_not_strangers():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)  # ~1.4 apart: three people
    faces = np.concatenate([c + rng.normal(scale=0.01, size=(4, 128)) for c in centres])
    labels = cluster_identities(faces, [None] * 12)
    assert labels == [0] * 4 + [1] * 4 + [2] * 4
    # a group (one video) forces faces together even when their descriptors are far apart
    groups: list[str | None] = [None] * 12
    groups[0] = groups[11] = "video:x"
    forced = cluster_identities(faces, groups)
    assert forced[0] == forced[11]
    assert len(set(forced[4:8])) == 1 and forced[4] not in {forced[0], forced[1], forced[8]}
    assert cluster_identities(faces[:1], [None]) == [0]
    with pytest.raises(ValueError):
        cluster_identities(faces, [None])


def test_fit_mesh_to_68_recovers_a_known_correspondence():
    rng = np.random.default_rng(1)
    n, v = 6, 120
    mesh = rng.uniform(0, 100, size=(n, v, 2))
    truth = rng.choice(v, size=68, replace=False)
    dlib = mesh[:, truth] + rng.normal(scale=0.2, size=(n, 68, 2))
    dlib[:, 36], dlib[:, 45] = [20.0, 40.0], [80.0, 40.0]  # a sane inter-ocular distance
    mesh[:, truth[36]], mesh[:, truth[45]] = dlib[:, 36], dlib[:, 45]
    mapping = fit_mesh_to_68(dlib, mesh)
    np.testing.assert_array_equal(mapping, truth)
    with pytest.raises(ValueError):
        fit_mesh_to_68(dlib[:0], mesh[:0])


def test_agreement_is_interocular_nme_per_region():
    pts = np.zeros((68, 2))
    pts[:, 0] = np.arange(68)
    pts[36], pts[45] = [0.0, 0.0], [50.0, 0.0]  # inter-ocular distance 50
    other = pts.copy()
    other[:17, 1] += 5.0  # jaw off by 5 px = 0.1 of the inter-ocular distance
    score = agreement(pts, other)
    assert score["regions"]["jaw"] == pytest.approx(0.1)
    assert score["regions"]["eyes"] == 0.0 and score["regions"]["mouth"] == 0.0
    assert score["nme"] == pytest.approx(0.1 * 17 / 68)


def _tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_source_selects_members_drops_exclusions_and_names_johns(tmp_path):
    archive = tmp_path / "pkg.tar.gz"
    _tar(
        archive,
        {
            "pkg/examples/faces/a.jpg": b"a",
            "pkg/examples/faces/dogs.jpg": b"dog",
            "pkg/examples/johns/John_X/1.jpg": b"j",
            "pkg/examples/other/b.jpg": b"b",
            "pkg/examples/faces/readme.txt": b"t",
        },
    )
    src = Source(
        name="t",
        registry="debian-src",
        package="pkg",
        version="1",
        members=("*/examples/faces/*.jpg", "*/examples/johns/*/*.jpg"),
        licence="x",
        photo_rights="x",
        exclude=("dogs.jpg",),
    )
    out = extract_source(src, archive, tmp_path / "out")
    assert [p.name for p in out] == ["John_X__1.jpg", "a.jpg"]
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"a"
    # idempotent: a second run keeps what is there
    assert extract_source(src, archive, tmp_path / "out") == out


def test_machine_debian_source_matches_the_first_plain_deb_entry(tmp_path):
    from train.data.real_sources import machine_debian_source

    (tmp_path / "debian.sources").write_text(
        "Types: deb\n# a comment: here\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\n"
        "Components: main\nSigned-By: /k.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: trixie-security\n"
    )
    assert machine_debian_source(tmp_path) == ("http://mirror.example/debian", "trixie", "/k.gpg")
    assert machine_debian_source(tmp_path / "missing")[1] == "bookworm"


def test_samples_carry_the_labels_pose_and_group_by_source():
    from train.loop import sample_groups

    samples = list(RealFaces(FIXTURE, "all"))
    yaws = np.array([s.meta["yaw"] for s in samples])
    assert np.isfinite(yaws).all() and (np.abs(yaws) < 90).all()
    groups = sample_groups(samples)
    assert list(groups["source"]) == [s.meta["source"] for s in samples]
    assert set(groups["source"]) == {"alpha", "beta"}
    assert "unknown" not in set(groups["yaw"])  # every face has a |yaw| bin from its labels


# --------------------------------------------------------------------------------------------------
# Per-point agreement, loose training faces and identity-balanced selection (issue 18, lever 1)


def test_agreement_reports_each_point_and_point_weights_follow_it():
    d = np.zeros((68, 2))
    d[36], d[45] = [0.0, 0.0], [10.0, 0.0]  # inter-ocular 10 px
    o = d.copy()
    o[0] += [1.0, 0.0]  # jaw point 0 off by 0.1 inter-ocular
    o[8] += [0.0, 0.5]  # chin off by 0.05
    a = agreement(d, o)
    assert len(a["points"]) == 68
    assert a["points"][0] == pytest.approx(0.1) and a["points"][8] == pytest.approx(0.05)
    assert a["points"][30] == 0.0
    # 1 below 0.06, 0 above 0.15, linear in between: 0.1 -> (0.15 - 0.1) / 0.09
    w = point_weights(a["points"])
    assert w.dtype == np.float32 and w.shape == (68,)
    assert w[8] == 1.0 and w[30] == 1.0
    assert w[0] == pytest.approx(0.05 / 0.09, rel=1e-5)
    assert point_weights([0.2, 0.15, 0.06])[0] == 0.0
    with pytest.raises(ValueError):
        point_weights([0.1], full=0.2, zero=0.1)


def test_select_per_identity_caps_each_person_evenly_in_order():
    ids = ["a"] * 10 + ["b"] * 2 + ["a"] * 2 + ["c"]
    keep = select_per_identity(ids, 3)
    assert keep == sorted(keep)
    assert [ids[i] for i in keep].count("a") == 3 and [ids[i] for i in keep].count("b") == 2
    assert 14 in keep  # c's only face
    a_members = [i for i, x in enumerate(ids) if x == "a"]
    assert [i for i in keep if ids[i] == "a"] == [a_members[0], a_members[6], a_members[-1]]  # spread
    with pytest.raises(ValueError):
        select_per_identity(ids, 0)


def test_fit_mesh_to_68_weights_faces():
    # two faces whose dlib point 0 sits on different mesh vertices; the weight decides the winner
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 100, size=(2, 68, 2))
    d[:, 36], d[:, 45] = [30.0, 40.0], [70.0, 40.0]
    mesh = np.full((2, 3, 2), 1e4)
    mesh[0, 1] = d[0, 0]  # face 0: vertex 1 on point 0, vertex 2 far
    mesh[0, 2] = d[0, 0] + 30.0
    mesh[1, 2] = d[1, 0]  # face 1: vertex 2 on point 0, vertex 1 far
    mesh[1, 1] = d[1, 0] + 30.0
    assert fit_mesh_to_68(d, mesh, np.array([3.0, 1.0]))[0] == 1
    assert fit_mesh_to_68(d, mesh, np.array([1.0, 3.0]))[0] == 2
    with pytest.raises(ValueError, match="weights"):
        fit_mesh_to_68(d, mesh, np.array([1.0]))


def _loose_fixture(tmp_path: Path) -> Path:
    """The fixture with per-point agreement on a1 and b3 usable for training (not kept)."""
    root = tmp_path / "real"
    shutil.copytree(FIXTURE, root)
    manifest = json.loads((root / "manifest.json").read_text())
    for face in manifest["faces"]:
        if face["id"] == "alpha/a1_1":
            face["agreement"]["points"] = [0.2] * 17 + [0.01] * 51  # jaw disagrees
        if face["id"] == "beta/b3_1":
            face.update(split="train", usable=True, pts="images/beta/b3_1.pts")
            shutil.copy(root / "images/beta/b1_1.pts", root / "images/beta/b3_1.pts")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_reader_loose_faces_weights_kinds_and_cap(tmp_path):
    root = _loose_fixture(tmp_path)
    strict = RealFaces(root, "train")
    loose = RealFaces(root, "train", loose=True)
    assert [s.meta["id"] for s in strict] == ["alpha/a1_1", "alpha/a2_1"]
    assert [s.meta["id"] for s in loose] == ["alpha/a1_1", "alpha/a2_1", "beta/b3_1"]
    assert "beta/b3_1" not in [s.meta["id"] for s in RealFaces(root, "test", loose=True)]
    w = loose[0].meta["point_weights"]
    assert w.shape == (68,) and (w[:17] == 0).all() and (w[17:] == 1).all()
    assert (loose[1].meta["point_weights"] == 1).all()  # no per-point record: all ones
    assert len(RealFaces(root, "train", kinds=["video"])) == 0
    assert len(RealFaces(root, "train", loose=True, max_per_identity=1)) == 2  # alpha capped to 1
    with pytest.raises(ValueError, match="kinds"):
        RealFaces(root, "train", kinds=["photo"])


def test_detector_client_box_moves_the_evaluation_start(tmp_path):
    from model_store.schemes import get_scheme
    from train.data.types import client_boxes
    from train.dataset import make_eval_crops

    tight = RealFaces(FIXTURE, "test")
    det = RealFaces(FIXTURE, "test", client_box="detector")
    assert "client_box" not in tight[0].meta and det[0].meta["client_box"] == det[0].meta["detector_box"]
    np.testing.assert_allclose(client_boxes([det[0]])[0], det[0].meta["detector_box"])
    np.testing.assert_allclose(client_boxes([tight[0]])[0], tight[0].box)
    scheme = get_scheme("ibug68")
    a = make_eval_crops([tight[0]], scheme, 64, CropRule())
    b = make_eval_crops([det[0]], scheme, 64, CropRule())
    assert not np.allclose(a.matrices, b.matrices)  # the crop follows the detector's box
    with pytest.raises(ValueError, match="client_box"):
        RealFaces(FIXTURE, "test", client_box="hog")
