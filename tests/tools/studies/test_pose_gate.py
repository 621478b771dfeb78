"""tools.studies.pose_gate: the gated choice on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from tools.studies.pose_gate import gate_table


def test_faces_at_or_above_the_threshold_take_the_turned_model() -> None:
    frontal = np.array([0.02, 0.04, 0.30, 0.10])
    turned = np.array([0.03, 0.05, 0.20, 0.06])
    yaw = np.array([5.0, -29.0, -70.0, 30.0])  # the sign of yaw does not matter
    table = gate_table(frontal, turned, yaw, [30, 60])
    assert table["frontal"] == {"nme": pytest.approx(0.115), "to_turned": 0}
    assert table["turned"] == {"nme": pytest.approx(0.085), "to_turned": 4}
    # >= 30: faces 3 and 4 turned -> (0.02 + 0.04 + 0.20 + 0.06) / 4
    assert table["gate 30"] == {"nme": pytest.approx(0.08), "to_turned": 2}
    # >= 60: face 3 only -> (0.02 + 0.04 + 0.20 + 0.10) / 4
    assert table["gate 60"] == {"nme": pytest.approx(0.09), "to_turned": 1}
    assert list(table) == ["frontal", "turned", "gate 30", "gate 60"]


def test_a_gate_beats_both_models_when_each_wins_on_its_own_faces() -> None:
    frontal = np.array([0.02, 0.40])
    turned = np.array([0.05, 0.10])
    table = gate_table(frontal, turned, np.array([0.0, 80.0]), [45])
    assert table["gate 45"]["nme"] < min(table["frontal"]["nme"], table["turned"]["nme"])


@pytest.mark.parametrize("shapes", [((3,), (3,), (2,)), ((0,), (0,), (0,)), ((2, 1), (2, 1), (2, 1))])
def test_mismatched_or_empty_arrays_are_refused(shapes: tuple[tuple[int, ...], ...]) -> None:
    a, b, y = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match="equal non-empty"):
        gate_table(a, b, y, [30])
