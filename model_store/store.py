"""Versioned model folders: ``<root>/<name>/<version>/manifest.json`` plus the stage files.

Names and versions are validated before they touch the file system, so no request can
name a path outside the store. Publishing is atomic: a version is assembled in a hidden
folder beside its final place, fsynced, verified, then renamed into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model_store.manifest import MANIFEST_FILE, Manifest, read_manifest, sha256_file, write_manifest

__all__ = [
    "DEFAULT_MODELS",
    "IntegrityError",
    "ModelNotFoundError",
    "ModelStore",
    "ModelVersion",
    "default_root",
    "validate_name",
]

# The default model of each scheme, embedded in the package.
DEFAULT_MODELS: dict[str, str] = {"ibug68": "faceapi-ibug68", "aflw19": "faceapi-aflw19"}

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")


class ModelNotFoundError(LookupError):
    """No such model or version in the store."""


class IntegrityError(RuntimeError):
    """A model file is missing, truncated or corrupted (its sha256 differs from the manifest)."""


def validate_name(name: str, *, kind: str = "model name") -> str:
    """Return ``name`` if it is a safe single path component, else raise ValueError."""
    pattern = _VERSION if kind == "version" else _NAME
    if not isinstance(name, str) or not pattern.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid {kind} {name!r}: use {pattern.pattern}")
    return name


def default_root() -> Path:
    env = os.environ.get("WINGMARK_MODEL_ROOT")
    return Path(env) if env else Path(__file__).resolve().parent / "models"


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: numeric parts compare as numbers ("1.10.0" > "1.9.0"), and sort after text."""
    parts = re.split(r"[._+-]", version)
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: Path
    manifest: Manifest

    def file(self, file_name: str) -> Path:
        """Path of a file the manifest lists (stage ONNX, checkpoint)."""
        if file_name not in self.manifest.files:
            raise ValueError(f"{file_name!r} is not a file of {self.name}/{self.version}")
        return self.path / file_name


class ModelStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    def list_models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        candidates = (p.name for p in self.root.iterdir() if _NAME.fullmatch(p.name))
        return sorted(n for n in candidates if self.list_versions(n))

    def list_versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have a manifest, oldest first."""
        folder = self.root / validate_name(name)
        if not folder.is_dir():
            return []
        found = [
            p.name for p in folder.iterdir() if _VERSION.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=_version_key)

    def resolve(self, name: str, version: str = "latest") -> ModelVersion:
        versions = self.list_versions(name)
        if not versions:
            raise ModelNotFoundError(f"no model {name!r} in {self.root}")
        if version == "latest":
            version = versions[-1]
        elif validate_name(version, kind="version") not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; versions: {versions}")
        path = self.root / name / version
        manifest = read_manifest(path / MANIFEST_FILE)
        if manifest.name != name or manifest.version != version:
            raise IntegrityError(
                f"{path / MANIFEST_FILE} names {manifest.name}/{manifest.version}, "
                f"but lies at {name}/{version}"
            )
        return ModelVersion(name=name, version=version, path=path, manifest=manifest)

    @staticmethod
    def verify(model: ModelVersion) -> None:
        """Check every stage file against the manifest's sha256; IntegrityError names the bad file."""
        expected = {s.file: s.sha256 for s in model.manifest.stages}
        for file_name, digest in expected.items():
            path = model.path / file_name
            if not path.is_file():
                raise IntegrityError(f"model file missing: {path}")
            actual = sha256_file(path)
            if actual != digest:
                raise IntegrityError(
                    f"model file corrupted or truncated: {path} (sha256 {actual[:12]}..., "
                    f"manifest says {digest[:12]}...)"
                )

    def publish(self, manifest: Manifest, files: dict[str, Path], *, overwrite: bool = False) -> ModelVersion:
        """Copy ``files`` (name in the version folder -> source path) and the manifest into
        ``<root>/<name>/<version>/`` atomically. Every stage file must be given and match its sha256."""
        name = validate_name(manifest.name)
        version = validate_name(manifest.version, kind="version")
        missing = [f for f in manifest.files if f not in files]
        if missing:
            raise ValueError(f"files named by the manifest but not given: {missing}")
        for file_name in files:
            if Path(file_name).name != file_name or file_name == MANIFEST_FILE:
                raise ValueError(f"invalid file name in a model version: {file_name!r}")
        final = self.root / name / version
        if final.exists() and not overwrite:
            raise FileExistsError(f"{final} exists; publish a new version or pass overwrite=True")
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
        staging.chmod(0o755)  # mkdtemp creates 0700; a serving user other than the publisher must read it
        try:
            for file_name, src in files.items():
                dst = staging / file_name
                shutil.copyfile(src, dst)
                dst.chmod(0o644)
                with open(dst, "rb") as f:
                    os.fsync(f.fileno())
            write_manifest(staging / MANIFEST_FILE, manifest)
            self.verify(ModelVersion(name, version, staging, manifest))
            if final.exists():
                trash = Path(tempfile.mkdtemp(prefix=f".{version}.old.", dir=final.parent))
                os.replace(final, trash / version)
                os.replace(staging, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, final)
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelVersion(name=name, version=version, path=final, manifest=manifest)
