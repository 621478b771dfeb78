from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.modelgen import publish_test_model


@pytest.fixture(scope="session")
def test_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with real two-stage ONNX test models for both schemes."""
    root = tmp_path_factory.mktemp("store")
    publish_test_model(root, "ibug68")
    publish_test_model(root, "aflw19")
    return root
