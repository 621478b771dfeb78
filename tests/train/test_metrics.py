from __future__ import annotations

import numpy as np
import pytest

from train.metrics import (
    auc,
    ced_curve,
    failure_rate,
    grouped_summary,
    large_pose_nme,
    nme_per_sample,
    radial_error,
    summarise,
    yaw_bin_labels,
)


def test_nme_by_hand() -> None:
    gt = np.zeros((2, 2, 2))
    pred = np.zeros((2, 2, 2))
    pred[0, 0] = [3.0, 4.0]  # error 5 on one of two points -> mean 2.5
    pred[1, :] = [0.0, 1.0]  # error 1 on both -> mean 1
    got = nme_per_sample(pred, gt, np.array([10.0, 4.0]))
    np.testing.assert_allclose(got, [0.25, 0.25])
    with pytest.raises(ValueError):
        nme_per_sample(pred, gt, np.array([10.0, 0.0]))
    with pytest.raises(ValueError):
        nme_per_sample(pred[:, :1], gt, np.array([1.0, 1.0]))


def test_radial_error_by_hand() -> None:
    # a square of four labels around (0, 0): each point's outward direction is along its diagonal
    gt = np.array([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    shrunk = gt * 0.5  # each point moved sqrt(2)/2 inwards
    np.testing.assert_allclose(radial_error(shrunk, gt, np.array([2.0])), [-np.sqrt(2) / 4])
    np.testing.assert_allclose(radial_error(gt * 1.5, gt, np.array([1.0])), [np.sqrt(2) / 2])
    # sliding along the outline is tangential and does not count; only the chosen points do
    slid = gt.copy()
    slid[0, 0] += [1.0, -1.0]  # perpendicular to (-1, -1)
    np.testing.assert_allclose(radial_error(slid, gt, np.array([1.0])), [0.0], atol=1e-12)
    out = gt.copy()
    out[0, 2] = [2.0, 2.0]  # point 2 pushed out by sqrt(2)
    np.testing.assert_allclose(radial_error(out, gt, np.array([1.0]), points=[2, 3]), [np.sqrt(2) / 2])
    with pytest.raises(ValueError):
        radial_error(gt[:, :3], gt, np.array([1.0]))
    with pytest.raises(ValueError, match="positive"):
        radial_error(shrunk, gt, np.array([0.0]))


def test_ced_auc_failure_rate_by_hand() -> None:
    e = np.array([0.02, 0.04, 0.06, 0.12])
    x, y = ced_curve(e, 0.08, num=5)  # x = 0, .02, .04, .06, .08
    np.testing.assert_allclose(x, [0, 0.02, 0.04, 0.06, 0.08])
    np.testing.assert_allclose(y, [0, 0.25, 0.5, 0.75, 0.75])
    # AUC@0.08 = mean(max(0, .08 - e)) / .08 = (.06 + .04 + .02 + 0) / 4 / .08 = 0.375
    assert auc(e, 0.08) == pytest.approx(0.375)
    # the trapezoid rule on a fine CED agrees with the exact value
    xf, yf = ced_curve(e, 0.08, num=80001)
    assert float(np.trapezoid(yf, xf) / 0.08) == pytest.approx(0.375, abs=1e-3)
    assert failure_rate(e, 0.08) == 0.25
    assert failure_rate(e, 0.12) == 0.0  # strictly above
    assert auc(np.zeros(3), 0.1) == pytest.approx(1.0)


def test_summary_and_groups() -> None:
    e = np.array([0.01, 0.03, 0.2, 0.05])
    s = summarise(e)
    assert s["n"] == 4
    assert s["nme"] == pytest.approx(0.0725)
    assert s["failure_rate"] == {"0.08": 0.25, "0.10": 0.25}
    assert s["median"] == pytest.approx(0.04)
    labels = yaw_bin_labels(np.array([-5.0, 20.0, 70.0, np.nan]))
    assert labels.tolist() == ["|yaw| 0-15", "|yaw| 15-30", "|yaw| 60-90", "unknown"]
    assert yaw_bin_labels(np.array([95.0, 15.0])).tolist() == ["|yaw| 60-90", "|yaw| 15-30"]
    g = grouped_summary(e, {"yaw": labels, "subset": np.array(["a", "a", "b", "b"])})
    assert g["overall"]["n"] == 4
    assert g["subset"]["a"]["nme"] == pytest.approx(0.02)
    assert g["subset"]["b"]["nme"] == pytest.approx(0.125)
    assert g["yaw"]["|yaw| 60-90"]["failure_rate"]["0.08"] == 1.0
    with pytest.raises(ValueError):
        grouped_summary(e, {"bad": np.array(["a"])})


def test_large_pose_nme_by_hand() -> None:
    # three points each; the labels' box: 4 x 1 (size 2) for the first four faces, 9 x 4 (size 6) last
    gt = np.array([[[0, 0], [4, 0], [4, 1]]] * 4 + [[[0, 0], [9, 0], [9, 4]]], dtype=float)
    pred = gt.copy()
    pred[0, 0] += [0.6, 0.0]  # mean point error 0.2 -> 0.1 of the box
    pred[1, :, 1] += 0.4  # every point 0.4 off -> 0.2
    pred[2, 1] += [0.0, 1.8]  # 0.6 -> 0.3
    pred[4, 2] += [3.6, 0.0]  # 1.2 over size 6 -> 0.2
    # bin edges: 30 and 60 belong to the bins below them; past 90 joins the last; NaN is left out
    yaw = np.array([-30.0, 30.5, 60.0, np.nan, 95.0])
    out = large_pose_nme(pred, gt, yaw)
    assert out["|yaw| 0-30"] == {"n": 1, "nme": pytest.approx(0.1)}
    assert out["|yaw| 30-60"] == {"n": 2, "nme": pytest.approx(0.25)}
    assert out["|yaw| 60-90"] == {"n": 1, "nme": pytest.approx(0.2)}
    # the mean of the three bins' means (0.1, 0.25, 0.2), not of the four faces (0.2)
    assert out["balanced"] == pytest.approx(0.55 / 3)
    empty = large_pose_nme(pred[:1], gt[:1], yaw[:1])
    assert empty["|yaw| 60-90"] == {"n": 0, "nme": None} and empty["balanced"] is None
    with pytest.raises(ValueError):
        large_pose_nme(pred, gt, yaw[:2])
