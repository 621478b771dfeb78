"""tools.studies.detect_bench (``wingmark data detect-bench``): matching detections to labelled faces,
and the dispatcher that runs it."""

from __future__ import annotations

import numpy as np
import pytest

from tools.data import main as data_main
from tools.studies.detect_bench import MATCH_IOU, match_faces


def test_match_faces_is_greedy_one_to_one_by_iou() -> None:
    truth = np.array([[0, 0, 100, 100], [200, 0, 300, 100], [500, 500, 600, 600]], dtype=np.float64)
    dets = np.array(
        [
            [10, 10, 110, 110],  # truth 0 (IoU 0.68) -- and truth 0's only overlap
            [5, 0, 105, 100],  # truth 0 better (IoU 0.90): it takes truth 0, the first goes unmatched
            [210, 0, 310, 100],  # truth 1
            [560, 560, 660, 660],  # truth 2 at IoU 0.087: under MATCH_IOU, no match
        ],
        dtype=np.float64,
    )
    assert list(match_faces(dets, truth)) == [1, 2, -1]
    assert list(match_faces(dets, truth, min_iou=0.05)) == [1, 2, 3]
    assert list(match_faces(np.zeros((0, 4)), truth)) == [-1, -1, -1]
    assert len(match_faces(dets, np.zeros((0, 4)))) == 0
    assert 0.0 < MATCH_IOU < 1.0


def test_wingmark_data_names_the_detector_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert data_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "wingmark data detect-bench" in out and "wingmark data detectors" in out


def test_detect_bench_help_is_reached_through_the_dispatcher(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        data_main(["detect-bench", "--help"])
    assert info.value.code == 0 and "detect-bench" in capsys.readouterr().out
