"""tools.studies.repose_labels: the carried-label error on hand-made shapes, and one small real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.studies.repose_labels import carried_error, fit_scale_shift, main
from train.data.real import REGIONS

MP_PYTHON = Path(__file__).resolve().parents[3] / "cache" / "real" / "mp-venv" / "bin" / "python"


def _face() -> np.ndarray:
    rng = np.random.default_rng(3)
    pts = rng.uniform(10.0, 30.0, size=(68, 2))
    pts[0], pts[1] = [0.0, 0.0], [40.0, 40.0]  # a 40 x 40 tight box
    pts[36], pts[45] = [10.0, 20.0], [30.0, 20.0]  # 20 px between the outer eye corners
    return pts


def test_a_scaled_and_shifted_copy_fits_exactly() -> None:
    exact = _face()
    carried = exact * 0.5 + np.array([7.0, -3.0])
    assert np.allclose(fit_scale_shift(carried, exact), exact)
    err = carried_error(carried, exact)
    assert err["nme_box"] == pytest.approx(0.0, abs=1e-9) and err["nme"] == pytest.approx(0.0, abs=1e-9)


def test_a_moved_region_is_what_is_left() -> None:
    exact = _face()
    carried = exact.copy()
    a, b = REGIONS["jaw"]
    carried[a:b, 0] += 4.0  # the jaw off by 4 px to the right: the fit shifts all points by a share of it
    err = carried_error(carried, exact)
    fitted = fit_scale_shift(carried, exact)
    dist = np.linalg.norm(fitted - exact, axis=1)
    assert err["nme_box"] == pytest.approx(dist.mean() / 40.0)
    assert err["nme"] == pytest.approx(dist.mean() / 20.0)
    assert err["regions_box"]["jaw"] > err["regions_box"]["eyes"] > 0.0
    assert np.asarray(err["residual_box"]).shape == (68, 2)


@pytest.mark.skipif(not MP_PYTHON.is_file(), reason="needs the real-face cache's MediaPipe venv")
def test_a_small_run_carries_no_error_without_a_turn_and_some_with_one(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "--num",
                "3",
                "--yaws",
                "0,45",
                "--size",
                "128",
                "--mp-python",
                str(MP_PYTHON),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    import json

    rows = json.loads(out.read_text())["by_target_yaw"]
    assert rows["0"]["nme_box"] < 1e-4 and rows["0"]["n"] == 3
    assert 0.005 < rows["45"]["nme_box"] < 0.2 and rows["45"]["systematic_box"] <= rows["45"]["nme_box"]
