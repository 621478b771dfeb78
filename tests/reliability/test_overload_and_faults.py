"""CI part of the reliability suite: a short overload and the fault-isolation case, real uvicorn.

The backend is the real ONNX Runtime backend wrapped by tests/reliability/faulty.py, which raises or
stalls on batches holding a poison face and logs every batch it sees.
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability import suite
from tests.reliability.run import OVERLOAD_SETTINGS, server


def test_overload_rejects_the_excess_with_429_and_loses_nothing(tmp_path: Path) -> None:
    srv = server(tmp_path, {**OVERLOAD_SETTINGS, "fault_delay_ms": 20}, faulty=True)
    try:
        result = suite.run_overload(srv.url, queue_limit=8, requests_per_client=4)
    finally:
        assert srv.stop() in (0, -15), srv.logs()
    assert result["concurrency"] == 32 and result["requests"] == 128
    assert result["lost"] == 0, result
    assert result["admitted"] == result["admitted_correct"] > 0, result
    assert result["rejected_429"] > 0, result
    assert result["rejected_with_retry_after"] == result["rejected_429"], result
    assert result["admitted"] + result["rejected_429"] == result["requests"]


def test_a_raising_backend_fails_only_the_poisoned_batches(tmp_path: Path) -> None:
    batch_log = tmp_path / "batches.jsonl"
    settings = {"max_batch_size": 8, "max_queue_delay_ms": 20, "fault_mode": "raise", "fault_log": batch_log}
    srv = server(tmp_path, settings, faulty=True)
    try:
        result = suite.run_fault_isolation(srv.url, batch_log, mode="raise", rounds=2)
    finally:
        assert srv.stop() in (0, -15), srv.logs()
    assert result["sequential"] == {"poison_alone": 500, "good_after": "ok"}, result
    assert result["failed_batches"] == result["poisoned_batches"] > 0, result
    # exactly the requests that shared a batch with a poison face failed; every other one is right
    assert result["failed_requests"] == result["requests_in_failed_batches"], result
    assert set(result["statuses"]) <= {"200", "500"} and result["good_answers_wrong"] == 0, result
    assert result["good_requests_after"] == "ok"


def test_a_stalling_backend_delays_but_does_not_break_the_others(tmp_path: Path) -> None:
    batch_log = tmp_path / "batches.jsonl"
    settings = {"max_batch_size": 8, "max_queue_delay_ms": 20, "fault_mode": "stall", "fault_stall_s": 1.5,
                "fault_log": batch_log}  # fmt: skip
    srv = server(tmp_path, settings, faulty=True)
    try:
        result = suite.run_fault_isolation(srv.url, batch_log, mode="stall", rounds=1)
    finally:
        assert srv.stop() in (0, -15), srv.logs()
    assert result["sequential"] == {"poison_alone": 504, "good_after": "ok"}, result
    assert result["statuses"] == {"200": 12, "504": 1}, result  # the poison request's 1 s deadline passes
    assert result["good_answers_wrong"] == 0 and result["good_requests_after"] == "ok"
