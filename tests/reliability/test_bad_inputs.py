"""CI part of the reliability suite: every bad input through the real uvicorn process.

Each input must get its problem+json 4xx (the two that uvicorn's HTTP parser refuses before the app
get its plain 400), and the next good request must still get exactly its single-request landmarks.
The full run with a report is ``make reliability``.
"""

from __future__ import annotations

from tests.e2e.conftest import Server
from tests.reliability import suite
from tests.reliability.run import BAD_SETTINGS

LIMITS = {k: int(v) for k, v in BAD_SETTINGS.items() if isinstance(v, int)}


def test_there_are_at_least_40_distinct_bad_inputs() -> None:
    items = suite.bad_inputs(LIMITS)
    assert len(items) >= 40 and len({b.name for b in items}) == len(items)
    assert {"image", "bomb", "media-type", "multipart", "json", "boxes", "names", "parameters", "http"} == {
        b.group for b in items
    }


def test_every_bad_input_gets_its_4xx_and_the_service_keeps_serving(bad_input_server: Server) -> None:
    result = suite.run_bad_inputs(bad_input_server.url, LIMITS, bad_input_server.process)
    failures = [r for r in result["inputs"] if not r["ok"] or r["next_good_request"] != "ok"]
    assert not failures, failures
    assert result["crashes"] == 0
    assert all(400 <= r["status"] < 500 for r in result["inputs"])
    assert not suite.log_has_image_bytes(bad_input_server.logs())


def test_traversal_model_names_never_reach_the_file_system(bad_input_server: Server) -> None:
    """Names like ../../etc are refused by the store's name check before any path is built."""
    import httpx

    from model_store.store import ModelStore, default_root

    store = ModelStore(default_root())
    for name in ("../../etc", "..", "/etc/passwd", "a/../../b", "test\x00x", "%2e%2e", "CON", "m" * 100):
        try:
            versions = store.list_versions(name)
        except ValueError:
            continue
        assert versions == [], name  # a harmless name that simply is not there
    good = suite.good_requests(1)[0]
    with httpx.Client(base_url=bad_input_server.url, timeout=30) as c:
        for model in ("../../etc", "..%2F..%2Fetc", "cnn67-ibug68/../../../etc", "cnn67-ibug68@../../1.0.0"):
            r = good.post(c, model=model)
            assert r.status_code == 422 and r.json()["type"] == "urn:wingmark:problem:unknown-model", r.text


def test_the_log_check_finds_image_bytes() -> None:
    import base64

    png = suite.good_requests(1)[0].data
    assert suite.log_has_image_bytes(f"INFO body {base64.b64encode(png).decode()}")
    assert suite.log_has_image_bytes(f"DEBUG got {png[:64]!r}")
    assert not suite.log_has_image_bytes(
        'INFO: 127.0.0.1 - "POST /v1/landmarks?model=' + "m" * 5000 + '" 422'
    )
