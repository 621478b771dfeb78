"""tools.bench: the percentile its reports (and the benchmark and the reliability suite) use."""

from __future__ import annotations

import math

from tools.bench import percentile


def test_percentile() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 95) == 95.0
    assert math.isnan(percentile([], 50))
