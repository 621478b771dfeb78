"""The app's version comes from pyproject.toml (through the installed metadata, or the file itself)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from service import version
from service.app import create_app
from service.settings import Settings

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    version.app_version.cache_clear()
    yield
    version.app_version.cache_clear()


def test_openapi_version_is_pyprojects(tmp_path: Path) -> None:
    app = create_app(Settings(model_root=tmp_path, detector="none"))
    assert app.version == PYPROJECT["version"] == version.app_version()
    assert app.openapi()["info"]["version"] == PYPROJECT["version"]


def test_the_app_takes_its_version_from_app_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import service.app

    monkeypatch.setattr(service.app, "app_version", lambda: "1.2.3")
    assert create_app(Settings(model_root=tmp_path, detector="none")).version == "1.2.3"


def test_a_source_tree_without_metadata_reads_pyproject(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", missing)
    assert version.app_version() == PYPROJECT["version"]
    version.app_version.cache_clear()
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "someone-else"\nversion = "9.9.9"\n')
    monkeypatch.setattr(version, "_PYPROJECT", other)
    assert version.app_version() == "0+unknown"
    version.app_version.cache_clear()
    other.write_text('[project]\nname = "wingmark"\nversion = "7.1.2"\n')
    assert version.app_version() == "7.1.2"
