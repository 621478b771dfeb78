"""The tracking study's measures on synthetic tracks with known jitter, stillness and delay."""

from __future__ import annotations

import numpy as np

from runtime.batch.tracking import OneEuroParams
from tools.studies.batch_tracking import fast_mask, jitter, lag_frames, smooth_track, still_mask


def _track(n: int = 300, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A 100-px face: still for 100 frames, then moving 5 px/frame, then still again."""
    base = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    x = np.zeros(n)
    x[100:200] = 5.0 * np.arange(1, 101)
    x[200:] = x[199]
    pts = base[None] + np.stack([x, np.zeros(n)], axis=1)[:, None, :]
    return pts + np.random.default_rng(seed).normal(0, noise, pts.shape)


def test_still_and_fast_frames() -> None:
    pts = _track()
    sizes = np.full(len(pts), 100.0)
    still, fast = still_mask(pts, sizes), fast_mask(pts, sizes)
    assert still[10:90].all() and not still[110:190].any() and still[215:].all()
    assert fast.sum() >= 30 and not fast[:100].any() and not fast[205:].any()  # the tenth moving fastest


def test_jitter_is_mean_step_in_percent_of_face_size() -> None:
    pts = _track()
    sizes = np.full(len(pts), 100.0)
    moving = np.zeros(len(pts), bool)
    moving[120:180] = True
    assert abs(jitter(pts, sizes, moving) - 5.0) < 1e-9  # 5 px per frame on a 100 px face
    assert jitter(pts, sizes, ~moving & (np.arange(len(pts)) < 90)) == 0.0


def test_lag_recovers_a_known_delay() -> None:
    pts = _track()
    sizes = np.full(len(pts), 100.0)
    delayed = np.concatenate([np.repeat(pts[:1], 2, axis=0), pts[:-2]])  # two frames late
    fast = fast_mask(pts, sizes)
    assert abs(lag_frames(pts, delayed, fast) - 2.0) < 0.06
    assert abs(lag_frames(pts, pts, fast)) < 0.06


def test_smoothing_lowers_still_jitter_on_a_noisy_track() -> None:
    pts = _track(noise=0.3)
    sizes = np.full(len(pts), 100.0)
    times = np.arange(len(pts)) / 25
    smoothed = smooth_track(pts, times, OneEuroParams())
    still = np.zeros(len(pts), bool)
    still[20:95] = True
    assert jitter(smoothed, sizes, still) < 0.5 * jitter(pts, sizes, still)
