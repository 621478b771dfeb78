from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_store.schemes import AFLW19, IBUG68
from train.losses import (
    adaptive_wing,
    l1,
    l2,
    landmark_loss,
    make_loss,
    normaliser_weights,
    smooth_l1,
    wing,
    wing_constant,
)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _grad(fn, x: float) -> float:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    fn(t).backward()
    assert t.grad is not None
    return float(t.grad)


def test_elementwise_values_by_hand() -> None:
    # l2 = x^2/2, l1 = |x|, smooth_l1 with beta=1
    assert l2(_t(3.0, -2.0)).tolist() == [4.5, 2.0]
    assert l1(_t(-3.0, 0.5)).tolist() == [3.0, 0.5]
    assert smooth_l1(_t(0.5, -3.0)).tolist() == [0.125, 2.5]
    # wing, w=10, eps=2: 10*ln(1.5) = 4.0546510811; 10*ln(1+0) = 0
    got = wing(_t(1.0, -1.0, 0.0), 10.0, 2.0)
    assert got.tolist() == pytest.approx([4.0546510811, 4.0546510811, 0.0], abs=1e-9)
    # C = 10 - 10*ln(6) = -7.9175946923; wing(12) = 12 - C = 19.9175946923
    assert wing_constant(10.0, 2.0) == pytest.approx(-7.9175946923, abs=1e-9)
    assert float(wing(_t(12.0), 10.0, 2.0)) == pytest.approx(19.9175946923, abs=1e-9)
    # w=4, eps=1: wing(2) = 4*ln(3) = 4.3944491547
    assert float(wing(_t(2.0), 4.0, 1.0)) == pytest.approx(4.3944491547, abs=1e-9)


def test_wing_is_continuous_at_w() -> None:
    for w, eps in [(10.0, 2.0), (5.0, 0.5), (15.0, 3.0)]:
        below = float(wing(_t(w - 1e-9), w, eps))
        above = float(wing(_t(w + 1e-9), w, eps))
        at = float(wing(_t(w), w, eps))
        assert below == pytest.approx(at, abs=1e-6)
        assert above == pytest.approx(at, abs=1e-6)
        assert at == pytest.approx(w * math.log(1 + w / eps), abs=1e-9)


def test_wing_gradient_amplifies_small_and_medium_errors() -> None:
    # d/dx wing = w/(eps + |x|) inside |x| < w: 10/(2+1) at x = 1
    assert _grad(lambda x: wing(x), 1.0) == pytest.approx(10.0 / 3.0)
    # small and medium errors (0 < |x| < 2 px): Wing's gradient beats both L1's (1) and L2's (x)
    for x in [0.05, 0.3, 1.0, 1.9]:
        g = _grad(lambda t: wing(t), x)
        assert g > _grad(l1, x)
        assert g > _grad(l2, x)
    # up to w - eps = 8 px it still beats L1
    for x in [2.5, 5.0, 7.9]:
        assert _grad(lambda t: wing(t), x) > _grad(l1, x)
    # large errors (outliers): same constant gradient as L1, far below L2's
    for x in [10.5, 30.0]:
        assert _grad(lambda t: wing(t), x) == pytest.approx(1.0)
        assert _grad(l2, x) > 10.0


def test_adaptive_wing_is_continuous_and_smooth_at_theta() -> None:
    theta = 0.5
    lo = float(adaptive_wing(_t(theta - 1e-9)))
    hi = float(adaptive_wing(_t(theta + 1e-9)))
    assert lo == pytest.approx(hi, abs=1e-6)
    g_lo = _grad(lambda t: adaptive_wing(t), theta - 1e-7)
    g_hi = _grad(lambda t: adaptive_wing(t), theta + 1e-7)
    assert g_lo == pytest.approx(g_hi, rel=1e-4)
    # by hand inside: 14*ln(1 + 0.2**1.1)
    assert float(adaptive_wing(_t(0.2))) == pytest.approx(14 * math.log(1 + 0.2**1.1), abs=1e-9)
    # with the background exponent (y=0: alpha - y = 2.1) the gradient vanishes at zero, unlike Wing's
    assert _grad(lambda t: adaptive_wing(t, y=0.0), 1e-3) < 0.05
    assert _grad(lambda t: wing(t), 1e-3) > 4.9


def test_wing_on_normalised_coordinates_is_a_scaled_l1() -> None:
    # The classic mistake: errors in [0, 1] units never leave the log region and
    # w*ln(1+|x|/eps) ~= (w/eps)*|x|: Wing degenerates to 5 x L1.
    x = torch.linspace(0.001, 0.05, 50, dtype=torch.float64)
    ratio = wing(x) / (5.0 * l1(x))
    assert torch.all((ratio > 0.98) & (ratio <= 1.0))
    # In pixels (S = 64) the same errors span 0.06..3.2 px and Wing is far from linear.
    ratio_px = wing(x * 64) / (5.0 * l1(x * 64))
    assert float(ratio_px.min()) < 0.6


def test_landmark_loss_converts_crop_units_to_pixels() -> None:
    s = 64
    target = torch.full((2, 6), 0.5, dtype=torch.float64)  # N=2, K=3
    pred = target.clone()
    pred[0, 0] += 1.0 / s  # 1 px error
    pred[1, 3] -= 4.0 / s  # 4 px error
    pen = make_loss({"name": "wing", "w": 10, "eps": 2})
    got = float(landmark_loss(pred, target, s, pen))
    # per-sample sums: 10 ln 1.5 and 10 ln 3, mean over the batch
    expected = (10 * math.log(1.5) + 10 * math.log(3.0)) / 2
    assert got == pytest.approx(expected, rel=1e-9)
    # NOT the normalised-coordinate version, which would be tiny (~5 x L1 in crop units)
    wrong = float(wing(pred - target).sum(dim=1).mean())
    assert wrong < 0.2 < got
    # the API is genuinely non-linear in the error, unlike the mistake
    one = float(landmark_loss(pred[:1], target[:1], s, pen))
    four = float(landmark_loss(pred[1:], target[1:], s, pen))
    assert four / one < 3.0  # 4x the error, ~2.7x the loss (log region)
    # [N, K, 2] input works the same
    got3 = float(landmark_loss(pred.view(2, 3, 2), target.view(2, 3, 2), s, pen))
    assert got3 == pytest.approx(got)


def test_landmark_loss_weights_points() -> None:
    s = 64
    target = torch.full((2, 6), 0.5, dtype=torch.float64)  # N=2, K=3
    pred = target.clone()
    pred[0, 0] += 1.0 / s  # sample 0, point 0, x: 1 px
    pred[0, 3] += 2.0 / s  # sample 0, point 1, y: 2 px
    pred[1, 5] -= 4.0 / s  # sample 1, point 2, y: 4 px
    pen = make_loss({"name": "l1"})
    w = torch.tensor([[1.0, 0.5, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    # sample 0: 1 * 1 + 0.5 * 2 = 2; sample 1: 0 * 4 = 0; mean 1
    assert float(landmark_loss(pred, target, s, pen, w)) == pytest.approx(1.0)
    ones = torch.ones(2, 3, dtype=torch.float64)
    assert float(landmark_loss(pred, target, s, pen, ones)) == pytest.approx(
        float(landmark_loss(pred, target, s, pen))
    )
    with pytest.raises(ValueError, match="weights"):
        landmark_loss(pred, target, s, pen, torch.ones(2, 6))


def test_landmark_loss_rejects_bad_inputs() -> None:
    pen = make_loss({"name": "l1"})
    with pytest.raises(ValueError):
        landmark_loss(torch.zeros(2, 4), torch.zeros(2, 6), 64, pen)
    with pytest.raises(ValueError):
        landmark_loss(torch.zeros(2, 4), torch.zeros(2, 4), 1, pen)
    with pytest.raises(ValueError):
        make_loss({"name": "wingg"})


@pytest.mark.parametrize("name", ["l2", "l1", "smooth_l1", "wing", "adaptive_wing"])
def test_every_loss_is_zero_at_zero_and_symmetric(name: str) -> None:
    pen = make_loss({"name": name})
    x = _t(-3.0, -0.4, 0.0, 0.4, 3.0)
    y = pen(x)
    assert float(y[2]) == 0.0
    assert y[0] == pytest.approx(float(y[4]))
    assert y[1] == pytest.approx(float(y[3]))
    assert float(y[4]) > float(y[3]) > 0


def _square_face(eye_gap: float) -> np.ndarray:
    """68 points in a 10 x 10 tight box, outer eye corners (36, 45) ``eye_gap`` apart."""
    pts = np.full((68, 2), 5.0)
    pts[0], pts[16] = (0.0, 0.0), (10.0, 10.0)  # the box's corners
    pts[36], pts[45] = (5.0 - eye_gap / 2, 4.0), (5.0 + eye_gap / 2, 4.0)
    return pts


def test_normaliser_weights_by_hand() -> None:
    # box size sqrt(10 * 10) = 10; normaliser/box: 0.8, 0.66, 0.33, 0.165, 0.05
    faces = np.stack([_square_face(g) for g in (8.0, 6.6, 3.3, 1.65, 0.5)])
    w = normaliser_weights(faces, IBUG68, ref=0.66, cap=3.0)
    np.testing.assert_allclose(w, [1.0, 1.0, 2.0, 3.0, 3.0], rtol=1e-6)  # 0.66/0.165 = 4 is capped at 3
    assert w.dtype == np.float32 and w.shape == (5,)
    uncapped = normaliser_weights(faces, IBUG68, ref=0.66, cap=10.0)
    np.testing.assert_allclose(uncapped[3:], [4.0, 10.0], rtol=1e-6)
    # a box-size scheme's normaliser is the box itself: every face gets clip(ref, 1, cap)
    box19 = np.stack([np.array([[0.0, 0.0], [4.0, 16.0]] + [[2.0, 8.0]] * 17)] * 2)
    np.testing.assert_allclose(normaliser_weights(box19, AFLW19, ref=1.0, cap=4.0), [1.0, 1.0])
    with pytest.raises(ValueError, match="ref > 0"):
        normaliser_weights(faces, IBUG68, ref=0.0, cap=3.0)
    with pytest.raises(ValueError, match="cap >= 1"):
        normaliser_weights(faces, IBUG68, ref=0.66, cap=0.5)
