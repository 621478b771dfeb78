from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Server
from tests.reliability.run import BAD_SETTINGS, server


@pytest.fixture(scope="module")
def bad_input_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real service (default models) with the bad-input suite's small limits."""
    srv = server(tmp_path_factory.mktemp("reliability"), BAD_SETTINGS)
    yield srv
    code = srv.stop()
    assert code in (0, -15), srv.logs()
