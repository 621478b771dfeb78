"""Real skin patches for synthetic heads (train.data.skin, render_face(skin_patch=...)): cut only from
the real cache's train split, and changing the skin only, never the labels or the old renders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data.pts300w import write_pts
from train.data.real import MANIFEST, MANIFEST_VERSION
from train.data.skin import build_skin_bank, patch_parts
from train.data.synthetic import RENDERER_VERSION, SyntheticFaces


def _cache(root: Path) -> Path:
    """A real-face cache in the cache's format: rendered 256-px faces standing in for photos."""
    faces = SyntheticFaces("ibug68", num=4, seed=31, image_size=256)
    entries = []
    for i, (split, kept) in enumerate((("train", True), ("train", True), ("test", True), ("train", False))):
        s = faces[i]
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(s.image).save(root / "images" / f"f{i}.png")
        write_pts(root / "images" / f"f{i}.pts", s.points)
        entries.append(
            {
                "id": f"src/f{i}",
                "image": f"images/f{i}.png",
                "pts": f"images/f{i}.pts",
                "split": split,
                "kept": kept,
            }
        )
    (root / MANIFEST).write_text(json.dumps({"version": MANIFEST_VERSION, "faces": entries}))
    return root


def test_bank_is_cut_from_the_kept_train_faces_only(tmp_path):
    bank = build_skin_bank(_cache(tmp_path / "real"), size=24)
    sources = {i.split("#")[0] for i in bank.ids}
    assert sources and sources <= {"src/f0", "src/f1"}  # never the test face f2, nor the dropped f3
    assert bank.details.shape == (len(bank), 24, 24) and bank.colours.shape == (len(bank), 3)
    assert np.allclose(bank.details.mean(axis=(1, 2)), 1.0, atol=0.02)
    assert (bank.details >= 0.75).all() and (bank.details <= 1.25).all()
    again = build_skin_bank(tmp_path / "real", size=24)
    assert again.fingerprint == bank.fingerprint and again.ids == bank.ids  # deterministic


def test_patches_that_are_not_plain_skin_are_dropped():
    rng = np.random.default_rng(0)
    skin = np.full((16, 16, 3), (200.0, 150.0, 120.0), dtype=np.float32) * rng.normal(1.0, 0.02, (16, 16, 1))
    assert patch_parts(skin.astype(np.float32)) is not None
    assert patch_parts(np.full((16, 16, 3), 20.0, dtype=np.float32)) is None  # too dark
    assert patch_parts(np.full((16, 16, 3), (90.0, 120.0, 200.0), dtype=np.float32)) is None  # blue
    edge = skin.copy()
    edge[:, 8:] *= 0.3  # a hair line or a shadow edge
    assert patch_parts(edge) is None


def test_real_skin_changes_the_image_not_the_labels_and_not_the_default_renders(tmp_path):
    bank = build_skin_bank(_cache(tmp_path / "real"), size=24)
    plain = SyntheticFaces("ibug68", num=2, seed=5, image_size=128, cache_dir=tmp_path / "c")
    plain_again = SyntheticFaces("ibug68", num=2, seed=5, image_size=128)
    skinned = SyntheticFaces("ibug68", num=2, seed=5, image_size=128, cache_dir=tmp_path / "c", skin=bank)
    assert plain._key == plain_again._key != skinned._key  # separate caches for skinned faces
    # without a bank the cache key is built from exactly the fields it had before real skin existed,
    # so caches rendered earlier stay valid
    old_fields = {"v": RENDERER_VERSION, "seed": 5, "size": 128, "pose": asdict(plain.pose)}
    old_fields["options"] = asdict(plain.options)
    assert plain._key == hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:16]
    for i in range(2):
        a, b, c = plain[i], plain_again[i], skinned[i]
        assert np.array_equal(a.image, b.image)  # without a bank: cached and fresh renders agree
        np.testing.assert_array_equal(a.points, c.points)  # the patch draws nothing from the seed's rng
        assert a.meta["yaw"] == c.meta["yaw"] and c.meta["skin_patch"] in bank.ids
        assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() > 0.5  # the skin did change


def test_dataset_spec_real_skin_loads_the_bank(tmp_path):
    root = _cache(tmp_path / "real")
    spec = {
        "kind": "synthetic",
        "num": 1,
        "seed": 5,
        "image_size": 96,
        "real_skin": {"root": str(root), "size": 24},
    }
    ds = SyntheticFaces.from_spec(spec, "ibug68")
    assert ds.skin is not None and len(ds.skin) > 0
    assert ds[0].meta["skin_patch"] in ds.skin.ids
    with pytest.raises(FileNotFoundError):
        SyntheticFaces.from_spec({**spec, "real_skin": {"root": str(tmp_path / "none")}}, "ibug68")
