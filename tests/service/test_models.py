"""service.models: load failures are reported to clients without the store's filesystem paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.models import ModelHost
from service.settings import Settings
from tests.service.modelgen import publish_test_model


def _started(settings: Settings) -> tuple[str, str | None, str]:
    """(state, load_error, not_ready_reason) of a host right after it loaded (in the foreground)."""

    async def main() -> tuple[str, str | None, str]:
        host = ModelHost(settings)
        await host.start(background=False)
        try:
            return host.state, host.load_error, host.not_ready_reason()
        finally:
            await host.stop()

    return asyncio.run(main())


def test_an_empty_store_fails_without_naming_its_path(tmp_path: Path) -> None:
    state, load_error, reason = _started(Settings(model_root=tmp_path, detector="none"))
    assert state == "failed"
    assert load_error == "no models in the model store"
    assert str(tmp_path) not in reason


def test_a_model_that_fails_to_load_is_reported_without_store_paths(tmp_path: Path) -> None:
    mv = publish_test_model(tmp_path, "ibug68")
    onnx = sorted(mv.path.rglob("*.onnx"))
    assert onnx
    onnx[0].write_bytes(b"not an onnx model")  # the runtime's error names the file it could not parse
    settings = Settings(model_root=tmp_path, models=["test-ibug68"], detector="none", verify_models=False)
    state, _, reason = _started(settings)
    assert state == "failed"
    assert "INVALID_PROTOBUF" in reason  # the runtime's own words reach the client
    assert str(tmp_path) not in reason
    assert "<path>" in reason  # the path was there, and was replaced
