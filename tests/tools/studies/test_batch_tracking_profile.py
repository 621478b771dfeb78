"""The tracking profile's clock: each step's thread CPU time excludes the wrapped steps inside it."""

from __future__ import annotations

import time

from tools.studies.batch_tracking_profile import StepClock


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_nested_steps_are_counted_once_and_labels_can_follow_the_caller() -> None:
    clock = StepClock()
    detect = clock.wrap(
        lambda s: _spin(s), lambda stack: "verification" if "verification" in stack else "detection"
    )
    network = clock.wrap(_spin, "network")

    def check() -> None:
        _spin(0.02)
        detect(0.03)  # inside the check: counted as verification, once

    verify = clock.wrap(check, "verification")

    def crop() -> None:
        _spin(0.02)
        network(0.04)

    crops = clock.wrap(crop, "crops")
    detect(0.03)
    verify()
    crops()
    s = clock.seconds
    assert abs(s["detection"] - 0.03) < 0.01
    assert abs(s["verification"] - 0.05) < 0.01
    assert abs(s["network"] - 0.04) < 0.01 and abs(s["crops"] - 0.02) < 0.01
