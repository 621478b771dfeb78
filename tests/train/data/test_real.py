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

from train.data.pts300w import read_pts
from train.data.real import (
    RealFaces,
    agreement,
    assign_splits,
    cluster_identities,
    fit_mesh_to_68,
    load_manifest,
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
