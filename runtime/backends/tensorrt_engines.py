"""TensorRT engines for model stages, part 1: the engine cache (keys, profiles, sidecars); pure Python.

The builder is :mod:`runtime.backends.tensorrt_build`, the runner and the backend
:mod:`runtime.backends.tensorrt` (which re-exports all three). No torch import anywhere: the GPU
image builds or loads its engines at start-up with these modules alone.

Requirements (GPU hosts only; imported lazily, so this module imports on any machine):

- ``tensorrt`` >= 10 (the TensorRT 10 Python API: tensor-name based I/O with ``set_input_shape``,
  ``set_tensor_address`` and ``execute_async_v3``; explicit batch networks);
- ``cuda-python`` >= 12 for device memory and streams (``cuda.bindings.runtime``, or the older
  ``cuda.cudart`` layout). Host arrays are plain numpy arrays; copies go through ``cudaMemcpyAsync``
  on one stream per runner.

Engine cache
------------
An engine is only valid for the GPU architecture (compute capability), the TensorRT version, the
precision and the optimisation profile it was built with, and for the exact ONNX file. Each cached
engine ``<root>/<model>/<version>/stage<i>_<precision>_sm<cc>_trt<version>_b<min>-<opt>-<max>.engine``
has a sidecar JSON (same name + ``.json``) holding the full :class:`EngineKey` (including the ONNX
file's sha256) and the engine file's own sha256. :func:`check_cached_engine` accepts an engine only
when every key field matches and the engine file is intact; anything else (an ONNX file republished
under the same version, another TensorRT release, a truncated file, a missing sidecar) is reported
with a reason and the engine is rebuilt, never loaded. The cache root is ``$WINGMARK_ENGINE_CACHE``,
default ``~/.cache/wingmark/engines``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model_store.manifest import atomic_write_bytes, sha256_file

__all__ = [
    "CACHE_ENV",
    "DEFAULT_INT8_CALIBRATION",
    "PRECISIONS",
    "SIDECAR_FORMAT",
    "BatchProfile",
    "CacheCheck",
    "EngineCache",
    "EngineKey",
    "TensorRTUnavailable",
    "check_cached_engine",
    "default_cache_dir",
    "engine_key",
    "engine_path_for",
    "write_cache_entry",
]

CACHE_ENV = "WINGMARK_ENGINE_CACHE"
PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1
# Identifier of the calibration set ``wingmark build-engine --precision int8`` uses by default
# (synthetic validation crops; see train.export.cli); part of an INT8 engine's cache key.
DEFAULT_INT8_CALIBRATION = "synthetic:n=512:seed=20180618"


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a CUDA device is missing on this machine."""


# --------------------------------------------------------------------------------------------
# Pure-Python cache logic (unit-tested without TensorRT)
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$WINGMARK_ENGINE_CACHE`` or ``~/.cache/wingmark/engines``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wingmark" / "engines"


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile over the batch axis: ``1 <= min <= opt <= max``."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    @classmethod
    def for_max(cls, max_batch: int, opt: int | None = None) -> BatchProfile:
        """Profile with min 1, the given max and ``opt`` (default: max/4 rounded, at least 1)."""
        return cls(1, opt if opt is not None else max(1, min(max_batch, max_batch // 4)), max_batch)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on. Two engines are interchangeable iff keys are equal.

    ``input_shape`` is ``(C, S, S)`` without the batch axis; ``calibration`` identifies the INT8
    calibration set (``None`` for fp32/fp16).
    """

    onnx_sha256: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    profile: BatchProfile
    input_shape: tuple[int, int, int]
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8" and not self.calibration:
            raise ValueError("an int8 engine key needs a calibration identifier")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise ValueError("onnx_sha256 must be 64 lowercase hex digits")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        return cls(
            onnx_sha256=str(data["onnx_sha256"]),
            compute_capability=str(data["compute_capability"]),
            tensorrt_version=str(data["tensorrt_version"]),
            precision=str(data["precision"]),
            profile=BatchProfile(**data["profile"]),
            input_shape=(
                int(data["input_shape"][0]),
                int(data["input_shape"][1]),
                int(data["input_shape"][2]),
            ),
            calibration=data.get("calibration"),
        )

    def slot(self) -> str:
        """File-name stem: the fields that may legitimately coexist in one cache (the ONNX hash is
        not part of it: a new ONNX file under the same model version replaces the old engine)."""
        cc = re.sub(r"[^0-9A-Za-z]", "", self.compute_capability)
        trt = re.sub(r"[^0-9A-Za-z.]", "", self.tensorrt_version)
        p = self.profile
        return f"{self.precision}_sm{cc}_trt{trt}_b{p.min}-{p.opt}-{p.max}"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def engine_key(
    onnx_path: Path,
    input_size: int,
    *,
    compute_capability: str,
    tensorrt_version: str,
    precision: str,
    profile: BatchProfile,
    calibration: str | None = None,
) -> EngineKey:
    """The key of the engine for the stage network ``onnx_path`` (input ``[N, 3, input_size, input_size]``).

    The one place keys are made: ``wingmark build-engine``, ``wingmark engines`` and the TensorRT
    backend must agree on it, or the service rebuilds (or, for INT8, cannot find) the engines built
    for it. ``calibration`` names an INT8 calibration set (default :data:`DEFAULT_INT8_CALIBRATION`)
    and is ignored for fp32 / fp16.
    """
    return EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        compute_capability=compute_capability,
        tensorrt_version=tensorrt_version,
        precision=precision,
        profile=profile,
        input_shape=(3, input_size, input_size),
        calibration=(calibration or DEFAULT_INT8_CALIBRATION) if precision == "int8" else None,
    )


def engine_path_for(root: Path, model: str, version: str, stage: int, key: EngineKey) -> Path:
    """Cache location of the engine for ``stage`` (0-based) of ``model``/``version`` under ``key``."""
    for part in (model, version):
        if not _SAFE.match(part) or ".." in part:
            raise ValueError(f"unsafe name for an engine cache path: {part!r}")
    if stage < 0:
        raise ValueError("stage index must be >= 0")
    return Path(root) / model / version / f"stage{stage}_{key.slot()}.engine"


def _sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


@dataclass(frozen=True)
class CacheCheck:
    """Whether a cached engine may be loaded, and why not."""

    usable: bool
    reason: str


def check_cached_engine(engine_path: Path, key: EngineKey, verify_checksum: bool = True) -> CacheCheck:
    """Decide whether the engine at ``engine_path`` was built for exactly ``key`` and is intact."""
    engine_path = Path(engine_path)
    sidecar = _sidecar(engine_path)
    if not engine_path.is_file():
        return CacheCheck(False, "no cached engine")
    if not sidecar.is_file():
        return CacheCheck(False, "engine has no sidecar key file")
    try:
        data = json.loads(sidecar.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            return CacheCheck(False, f"sidecar format {data.get('format')!r} != {SIDECAR_FORMAT}")
        cached = EngineKey.from_dict(data["key"])
        recorded_sha = str(data["engine_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        return CacheCheck(False, f"unreadable sidecar: {exc}")
    if cached != key:
        wanted, have = key.to_dict(), cached.to_dict()
        diffs = [
            f"{name}: cached {have[name]!r} != wanted {wanted[name]!r}"
            for name in wanted
            if wanted[name] != have[name]
        ]
        stale = "onnx_sha256" in {d.split(":")[0] for d in diffs}
        return CacheCheck(
            False, ("stale (ONNX file changed); " if stale else "key mismatch; ") + "; ".join(diffs)
        )
    if verify_checksum and sha256_file(engine_path) != recorded_sha:
        return CacheCheck(False, "engine file checksum differs from its sidecar (corrupt or modified)")
    return CacheCheck(True, "cache hit")


def write_cache_entry(
    engine_path: Path, engine: bytes, key: EngineKey, info: dict[str, Any] | None = None
) -> None:
    """Write ``engine`` and its sidecar atomically. The old sidecar is removed first and the new one
    written last, so a crash in between leaves an engine without a sidecar (rejected), never an
    engine with a wrong key."""
    engine_path = Path(engine_path)
    sidecar = _sidecar(engine_path)
    sidecar.unlink(missing_ok=True)
    atomic_write_bytes(engine_path, engine)
    payload = {
        "format": SIDECAR_FORMAT,
        "key": key.to_dict(),
        "engine_sha256": hashlib.sha256(engine).hexdigest(),
        "engine_bytes": len(engine),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "info": info or {},
    }
    atomic_write_bytes(sidecar, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class EngineCache:
    """Engine cache rooted at ``root`` (default :func:`default_cache_dir`)."""

    root: Path = field(default_factory=default_cache_dir)
    log: Callable[[str], None] = print

    def get_or_build(
        self, model: str, version: str, stage: int, key: EngineKey, build: Callable[[], bytes]
    ) -> tuple[Path, bool]:
        """Path of a valid engine for ``key``, building it with ``build()`` unless cached.

        Returns ``(path, built)``; ``built`` is False on a cache hit.
        """
        path = engine_path_for(self.root, model, version, stage, key)
        check = check_cached_engine(path, key)
        if check.usable:
            self.log(f"engine cache hit: {path}")
            return path, False
        self.log(f"building engine {path.name} ({check.reason})")
        started = time.perf_counter()
        engine = build()
        write_cache_entry(path, engine, key, {"build_seconds": round(time.perf_counter() - started, 3)})
        return path, True
