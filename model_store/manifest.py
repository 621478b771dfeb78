"""The manifest of a model version: the typed contract between training and serving."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_store.geometry import BoxCalibration, CropRule
from model_store.preprocess import Normalisation
from model_store.schemes import SCHEMES

__all__ = [
    "MANIFEST_FILE",
    "BoxCalibrationSpec",
    "CropRuleSpec",
    "Manifest",
    "NormalisationSpec",
    "Provenance",
    "StageSpec",
    "atomic_write_bytes",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]

MANIFEST_FILE = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NormalisationSpec(_Strict):
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def to_normalisation(self) -> Normalisation:
        return Normalisation(mean=self.mean, std=self.std)


class CropRuleSpec(_Strict):
    scale: float = Field(default=1.25, gt=0)
    shift_x: float = 0.0
    shift_y: float = 0.0
    roll: Literal["eyes", "blend"] = "eyes"  # later stages' roll estimate; 1.0.0 manifests: "eyes"

    def to_rule(self) -> CropRule:
        return CropRule(scale=self.scale, shift_x=self.shift_x, shift_y=self.shift_y, roll=self.roll)


class BoxCalibrationSpec(_Strict):
    dx: float = 0.0
    dy: float = 0.0
    sw: float = Field(default=1.0, gt=0)
    sh: float = Field(default=1.0, gt=0)
    fitted_on: int | None = None  # number of faces the calibration was fitted on, if fitted
    note: str = ""

    def to_calibration(self) -> BoxCalibration:
        return BoxCalibration(dx=self.dx, dy=self.dy, sw=self.sw, sh=self.sh)


class StageSpec(_Strict):
    """One network of a cascade. Stage 0 crops from the face box; later stages re-align on the
    previous stage's landmarks (geometry.crop_matrix_from_points)."""

    name: str
    architecture: str
    input_size: int = Field(gt=0)
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    normalisation: NormalisationSpec = NormalisationSpec()
    crop_rule: CropRuleSpec = CropRuleSpec()
    output: Literal["crop_unit"] = "crop_unit"
    checkpoint: str | None = None  # optional PyTorch checkpoint file beside the ONNX (reference backend)

    @field_validator("file", "checkpoint")
    @classmethod
    def _plain_file_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or "\\" in v or v in {".", ".."} or v.startswith(".")):
            raise ValueError(f"stage file must be a plain file name inside the version folder, got {v!r}")
        return v


class Provenance(_Strict):
    config: dict[str, Any] = Field(default_factory=dict)
    config_sha256: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    code_version: str = ""


class Manifest(_Strict):
    schema_version: Literal[1] = 1
    name: str
    version: str
    scheme: str
    stages: list[StageSpec] = Field(min_length=1, max_length=4)
    box_calibrations: dict[str, BoxCalibrationSpec] = Field(
        default_factory=lambda: {"client": BoxCalibrationSpec()}
    )
    provenance: Provenance = Provenance()
    evaluation: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v not in SCHEMES:
            raise ValueError(f"unknown scheme {v!r}; known: {sorted(SCHEMES)}")
        return v

    @property
    def files(self) -> list[str]:
        """Every file the manifest vouches for, in stage order."""
        out = [s.file for s in self.stages]
        out += [s.checkpoint for s in self.stages if s.checkpoint]
        return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside, fsync, rename over: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; published files are world-readable
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> Manifest:
    """Parse ``path`` (a manifest.json or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    return Manifest.model_validate_json(path.read_bytes())


def write_manifest(path: Path, manifest: Manifest) -> None:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(path, text.encode())
