from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from model_store.manifest import (
    Manifest,
    Provenance,
    StageSpec,
    read_manifest,
    sha256_file,
    write_manifest,
)
from model_store.store import IntegrityError, ModelNotFoundError, ModelStore, validate_name


def _stage_file(tmp_path: Path, name: str, payload: bytes) -> tuple[Path, StageSpec]:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    spec = StageSpec(
        name=name.split(".")[0], architecture="cnn6", input_size=64, file=name, sha256=sha256_file(path)
    )
    return path, spec


def _publish(tmp_path: Path, store: ModelStore, version: str = "1.0.0") -> Path:
    f1, s1 = _stage_file(tmp_path, "stage1.onnx", b"stage-one-weights" * 100)
    f2, s2 = _stage_file(tmp_path, "stage2.onnx", b"stage-two-weights" * 100)
    manifest = Manifest(name="cnn67-ibug68", version=version, scheme="ibug68", stages=[s1, s2])
    return store.publish(manifest, {"stage1.onnx": f1, "stage2.onnx": f2}).path


def test_publish_resolve_and_verify(tmp_path):
    store = ModelStore(tmp_path / "models")
    path = _publish(tmp_path, store)
    assert path == tmp_path / "models" / "cnn67-ibug68" / "1.0.0"
    mv = store.resolve("cnn67-ibug68")
    assert mv.version == "1.0.0" and mv.manifest.scheme == "ibug68"
    store.verify(mv)
    assert store.list_models() == ["cnn67-ibug68"]
    # nothing but the version folder is left beside it (no staging debris)
    assert [p.name for p in path.parent.iterdir()] == ["1.0.0"]
    # readable by a serving user other than the publisher
    assert path.stat().st_mode & 0o777 == 0o755
    assert {(p.stat().st_mode & 0o777) for p in path.iterdir()} == {0o644}


def test_latest_uses_natural_version_order(tmp_path):
    store = ModelStore(tmp_path / "models")
    for v in ["1.9.0", "1.10.0", "1.2.0"]:
        _publish(tmp_path, store, v)
    assert store.list_versions("cnn67-ibug68") == ["1.2.0", "1.9.0", "1.10.0"]
    assert store.resolve("cnn67-ibug68", "latest").version == "1.10.0"
    assert store.resolve("cnn67-ibug68", "1.9.0").version == "1.9.0"
    with pytest.raises(ModelNotFoundError):
        store.resolve("cnn67-ibug68", "2.0.0")
    with pytest.raises(ModelNotFoundError):
        store.resolve("nope")


def test_publish_refuses_to_overwrite_by_default(tmp_path):
    store = ModelStore(tmp_path / "models")
    _publish(tmp_path, store)
    with pytest.raises(FileExistsError):
        _publish(tmp_path, store)


def test_one_flipped_byte_is_refused_naming_the_file(tmp_path):
    store = ModelStore(tmp_path / "models")
    path = _publish(tmp_path, store)
    target = path / "stage2.onnx"
    data = bytearray(target.read_bytes())
    data[37] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"stage2\.onnx"):
        store.verify(store.resolve("cnn67-ibug68"))


def test_truncated_and_missing_files_are_refused(tmp_path):
    store = ModelStore(tmp_path / "models")
    path = _publish(tmp_path, store)
    (path / "stage1.onnx").write_bytes((path / "stage1.onnx").read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=r"stage1\.onnx"):
        store.verify(store.resolve("cnn67-ibug68"))
    (path / "stage1.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        store.verify(store.resolve("cnn67-ibug68"))


def test_publish_checks_digests_before_the_version_appears(tmp_path):
    store = ModelStore(tmp_path / "models")
    f1, s1 = _stage_file(tmp_path, "stage1.onnx", b"abc")
    f1.write_bytes(b"abd")  # the file changed after its digest was taken
    manifest = Manifest(name="m1", version="1", scheme="aflw19", stages=[s1])
    with pytest.raises(IntegrityError):
        store.publish(manifest, {"stage1.onnx": f1})
    assert store.list_versions("m1") == []
    assert not any(p.name.startswith(".") for p in (tmp_path / "models" / "m1").iterdir())


@pytest.mark.parametrize(
    "bad", ["../etc", "..", "a/b", "/abs", "Upper", "", "a" * 65, ".hidden", "x\x00y", "name with space"]
)
def test_names_that_could_escape_the_store_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        validate_name(bad)
    with pytest.raises(ValueError):
        ModelStore(tmp_path).resolve(bad)


def test_version_names_are_validated(tmp_path):
    _publish(tmp_path, ModelStore(tmp_path / "models"))
    with pytest.raises(ValueError):
        ModelStore(tmp_path / "models").resolve("cnn67-ibug68", "../../x")


def test_manifest_round_trip_and_schema(tmp_path):
    _, s1 = _stage_file(tmp_path, "s.onnx", b"x")
    m = Manifest(
        name="a",
        version="2",
        scheme="aflw19",
        stages=[s1],
        evaluation={"nme": 0.02},
        provenance=Provenance(config={"lr": 0.001}, data={"kind": "synthetic"}),
    )
    write_manifest(tmp_path / "manifest.json", m)
    back = read_manifest(tmp_path)
    assert back == m
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["stages"][0]["output"] == "crop_unit" and raw["schema_version"] == 1
    with pytest.raises(ValidationError, match="scheme"):
        Manifest(name="a", version="1", scheme="wflw", stages=[s1])
    with pytest.raises(ValidationError, match="plain file name"):
        StageSpec(name="s", architecture="cnn6", input_size=64, file="../x.onnx", sha256="0" * 64)
    with pytest.raises(ValidationError):
        Manifest(name="a", version="1", scheme="ibug68", stages=[])
    with pytest.raises(ValidationError):  # unknown keys are errors, not silently dropped
        Manifest.model_validate({**raw, "extra_key": 1})


def test_store_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WINGMARK_MODEL_ROOT", str(tmp_path / "elsewhere"))
    assert ModelStore().root == tmp_path / "elsewhere"
    monkeypatch.delenv("WINGMARK_MODEL_ROOT")
    assert ModelStore().root.name == "models" and ModelStore().root.parent.name == "model_store"


def test_sha256_file_reads_in_chunks(tmp_path):
    """The one file digest (manifests, the store's verification and the TensorRT engine keys)."""
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 3_000_000)
    assert sha256_file(f, chunk=4096) == sha256_file(f) == hashlib.sha256(b"a" * 3_000_000).hexdigest()
