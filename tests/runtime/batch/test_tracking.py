from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from runtime import Detections, Landmarker
from runtime.batch.inputs import read_video
from runtime.batch.tracking import TRACK, FaceTracker, OneEuroFilter, OneEuroParams, TrackerConfig, face_size


def _run_filter(signal: np.ndarray, fps: float, params: OneEuroParams, scale: float = 100.0) -> np.ndarray:
    f = OneEuroFilter(params)
    return np.stack([f(x, i / fps, scale) for i, x in enumerate(signal)])


def test_one_euro_passes_a_constant_and_the_first_sample() -> None:
    x = np.tile(np.array([[10.0, 20.0], [30.0, 5.0]]), (20, 1, 1))
    out = _run_filter(x, 25, OneEuroParams())
    assert np.allclose(out, x)


def test_one_euro_cuts_jitter_at_rest() -> None:
    rng = np.random.default_rng(0)
    noisy = 50.0 + rng.normal(0, 0.5, size=(400, 5, 2))  # a still face, 0.5 px noise
    out = _run_filter(noisy, 25, OneEuroParams())
    step_raw = np.abs(np.diff(noisy[50:], axis=0)).mean()
    step_out = np.abs(np.diff(out[50:], axis=0)).mean()
    assert step_out < 0.25 * step_raw


def test_one_euro_follows_fast_motion_with_little_lag() -> None:
    t = np.arange(100) / 25
    x = np.zeros((100, 1, 2))
    x[:, 0, 0] = 200 * t  # 2 face sizes per second (face size 100 px)
    fast = _run_filter(x, 25, OneEuroParams(beta=10.0))
    slow = _run_filter(x, 25, OneEuroParams(beta=0.0))
    per_frame = 200 / 25
    assert (x[-1, 0, 0] - fast[-1, 0, 0]) / per_frame < 1.0  # under one frame behind
    assert (x[-1, 0, 0] - slow[-1, 0, 0]) / per_frame > 3.0  # without the speed term it lags


def test_one_euro_restarts_on_time_going_backwards() -> None:
    f = OneEuroFilter()
    f(np.zeros((1, 2)), 1.0, 10.0)
    assert np.allclose(f(np.ones((1, 2)), 0.5, 10.0), 1.0)


def test_face_size() -> None:
    assert face_size(np.array([[0.0, 0.0], [40.0, 10.0]])) == pytest.approx(20.0)


def test_tracks_then_redetects_when_the_face_goes(landmarker: Landmarker, tiny_video: Path) -> None:
    tracker = FaceTracker(landmarker, config=TrackerConfig(verify_every=4))
    frames = list(read_video(tiny_video))
    out = [tracker.step(f.pixels, f.time) for f in frames]
    assert len(out[0]) == 1 and out[0][0].box_source == landmarker.detector.name  # type: ignore[union-attr]
    tracked = [f[0] for f in out[1:12] if f]
    assert len(tracked) == 11 and all(f.box_source == TRACK and f.score is None for f in tracked)
    assert {f.track for f in tracked} == {out[0][0].track}  # one track throughout
    # the face pans 2 px per frame: the tracked landmarks follow it
    shift = out[11][0].landmarks_raw.mean(axis=0) - out[0][0].landmarks_raw.mean(axis=0)
    assert abs(shift[0] - 22) < 4 and abs(shift[1]) < 3
    assert all(not f for f in out[13:])  # the face has gone: lost, re-detection finds nothing
    assert tracker.stats["lost"] >= 1 and tracker.stats["detections"] >= 2


def test_tracked_landmarks_match_detection_on_the_same_frame(
    landmarker: Landmarker, tiny_video: Path
) -> None:
    frames = list(read_video(tiny_video))[:8]
    tracked = FaceTracker(landmarker, config=TrackerConfig(smoothing=None))
    detected = FaceTracker(landmarker, config=TrackerConfig(smoothing=None), track=False)
    for f in frames:
        a, b = tracked.step(f.pixels, f.time), detected.step(f.pixels, f.time)
    size = face_size(b[0].landmarks)
    err = np.linalg.norm(a[0].landmarks - b[0].landmarks, axis=1).mean() / size
    assert err < 0.03  # the re-aligned last stage lands where the full cascade does
    assert detected.stats["detections"] == 8 and tracked.stats["detections"] == 1


def test_a_detection_frame_gives_what_predict_gives(landmarker: Landmarker, tiny_video: Path) -> None:
    """The detection frame's faces: detector, calibration, the cascade and (refine="detector") its second
    pass, as ``Landmarker.predict`` gives them on the same pixels."""
    (frame,) = list(read_video(tiny_video))[:1]
    (face,) = FaceTracker(landmarker, config=TrackerConfig(smoothing=None)).step(frame.pixels, frame.time)
    (expected,) = landmarker.predict(frame.pixels)
    np.testing.assert_allclose(face.landmarks_raw, expected.landmarks, atol=1e-6)
    once = Landmarker(landmarker.model, landmarker.backend, landmarker.detector, refine="never")
    (first,) = FaceTracker(once, config=TrackerConfig(smoothing=None)).step(frame.pixels, frame.time)
    assert np.abs(first.landmarks_raw - face.landmarks_raw).max() > 1e-3  # the second pass ran


class _TiltedEyes:
    """The landmarker's detector with eye keypoints on a line turned 20 degrees in each box."""

    def __init__(self, inner: object) -> None:
        self.inner, self.name = inner, inner.name  # type: ignore[attr-defined]

    def detect(self, image: np.ndarray, *, min_face: float | None = None) -> Detections:
        dets = self.inner.detect(image, min_face=min_face)  # type: ignore[attr-defined]
        c = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2  # (N, 2)
        arm = 0.2 * (dets.boxes[:, 2:3] - dets.boxes[:, 0:1]) * [np.cos(0.35), np.sin(0.35)]  # (N, 2)
        return dataclasses.replace(dets, keypoints=np.stack([c - arm, c + arm], axis=1))


def test_a_detection_frame_takes_the_detectors_roll_as_predict_does(
    landmarker: Landmarker, tiny_video: Path
) -> None:
    (frame,) = list(read_video(tiny_video))[:1]
    tilted = Landmarker(landmarker.model, landmarker.backend, _TiltedEyes(landmarker.detector))
    (face,) = FaceTracker(tilted, config=TrackerConfig(smoothing=None)).step(frame.pixels, frame.time)
    (expected,) = tilted.predict(frame.pixels)
    np.testing.assert_allclose(face.landmarks_raw, expected.landmarks, atol=1e-6)
    (plain,) = landmarker.predict(frame.pixels)
    assert np.abs(expected.landmarks - plain.landmarks).max() > 1e-3  # the roll changed the crop


def test_smoothing_keeps_raw_points_and_differs_from_them(landmarker: Landmarker, tiny_video: Path) -> None:
    tracker = FaceTracker(landmarker, config=TrackerConfig(smoothing=OneEuroParams(min_cutoff=0.1, beta=0.0)))
    out = [tracker.step(f.pixels, f.time) for f in list(read_video(tiny_video))[:10]]
    assert np.allclose(out[0][0].landmarks, out[0][0].landmarks_raw)  # the first sample passes
    lag = out[9][0].landmarks_raw.mean(axis=0)[0] - out[9][0].landmarks.mean(axis=0)[0]
    assert lag > 4  # heavily smoothed points trail the panning face; the raw ones do not


def test_needs_a_detector(landmarker: Landmarker) -> None:
    bare = Landmarker(landmarker.model, landmarker.backend, None)
    with pytest.raises(ValueError, match="detector"):
        FaceTracker(bare)


def test_verification_looks_at_a_small_window_without_upsampling(
    landmarker: Landmarker, tiny_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check costs a fraction of a whole-frame detection: the detector sees a window of 1.6 face sizes
    with the face resized to about 100 px, and never runs upsampled there (dlib's 2x costs 4x)."""
    detector = landmarker.detector
    assert detector is not None
    runs: list[tuple[tuple[int, ...], int]] = []
    original = detector._run  # type: ignore[attr-defined]

    def run(img: np.ndarray, upsample: int) -> object:
        runs.append((img.shape, upsample))
        return original(img, upsample)

    monkeypatch.setattr(detector, "_run", run)
    tracker = FaceTracker(landmarker, config=TrackerConfig(verify_every=2))
    out = [tracker.step(f.pixels, f.time) for f in list(read_video(tiny_video))[:9]]
    assert all(len(faces) == 1 for faces in out) and tracker.stats["detections"] == 1
    checks = runs[-tracker.stats["verifications"] :]
    assert tracker.stats["verifications"] == 4 and len(runs) == 1 + 4  # one detection, then the checks
    size = face_size(out[-1][0].landmarks_raw)
    for shape, upsample in checks:
        assert upsample == 0 and max(shape[:2]) <= 1.6 * 100 + 2, (shape, upsample, size)
