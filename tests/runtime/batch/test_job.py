from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime import Landmarker
from runtime.batch import BatchJob, BatchOptions, read_rows
from runtime.batch.inputs import read_video
from tests.service.photos import FRONTAL

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: Path, tiny_video: Path) -> Path:
    """Four real photos (one in a subfolder), a corrupt JPEG, a text file named .png, a broken video
    and a small video of a panning face."""
    root = tmp_path_factory.mktemp("inputs")
    for name in FRONTAL[:3]:
        shutil.copy(photos / name, root / name)
    (root / "sub").mkdir()
    shutil.copy(photos / FRONTAL[3], root / "sub" / FRONTAL[3])
    (root / "corrupt.jpg").write_bytes((photos / FRONTAL[0]).read_bytes()[:300])
    (root / "notes.png").write_text("not an image")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    shutil.copy(tiny_video, root / "pan.mp4")
    return root


def _by_source(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(Path(r["source"]).name, []).append(r)
    return out


@pytest.fixture(scope="module")
def result(
    landmarker: Landmarker, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    from runtime.batch import expand_inputs

    out = tmp_path_factory.mktemp("out") / "results.parquet"
    stream = io.StringIO()
    options = BatchOptions(batch_size=3, workers=2, draw=out.parent / "drawn")
    summary = BatchJob(landmarker, options).run(expand_inputs([folder]), out, stream=stream, log_every=0)
    assert summary.inputs == 8 and summary.failed == 3 and not summary.interrupted
    return out, stream.getvalue()


def test_every_input_leaves_rows_and_failures_are_recorded(result: tuple[Path, str]) -> None:
    rows = _by_source(read_rows(result[0]))
    assert set(rows) == {*FRONTAL[:4], "corrupt.jpg", "notes.png", "broken.mp4", "pan.mp4"}
    for bad in ("corrupt.jpg", "notes.png", "broken.mp4"):
        assert len(rows[bad]) == 1 and rows[bad][0]["error"] and rows[bad][0]["landmarks"] is None
    assert "ImageDecodeError" in rows["corrupt.jpg"][0]["error"]
    for name in FRONTAL[:4]:
        (face,) = rows[name]
        assert face["error"] is None and face["box_source"] == "dlib_hog" and face["kind"] == "image"
        assert np.asarray(face["landmarks"]).shape == (68, 2) and face["model"] == "cnn67-ibug68"


def test_the_video_is_tracked_smoothed_and_ends_with_no_face_rows(result: tuple[Path, str]) -> None:
    rows = _by_source(read_rows(result[0]))["pan.mp4"]
    # the 4 blank frames either have a "no face" row or are dropped faces: one row per frame at most
    assert [r["frame"] for r in rows] == list(range(16))
    faces = [r for r in rows if r["face"] is not None]
    assert 12 <= len(faces) <= 14
    assert faces[0]["box_source"] == "dlib_hog" and faces[1]["box_source"] == "track"
    assert {r["track"] for r in faces} == {0} and all(r["kind"] == "video" for r in rows)
    assert rows[5]["time"] == pytest.approx(0.5)
    assert all(r["landmarks_raw"] is not None for r in faces)
    assert not np.allclose(faces[8]["landmarks"], faces[8]["landmarks_raw"])  # smoothed on by default
    assert all(r["face"] is None and r["landmarks"] is None for r in rows[14:])


def test_batched_crops_equal_the_facade_one_image_at_a_time(
    result: tuple[Path, str], landmarker: Landmarker, folder: Path
) -> None:
    rows = _by_source(read_rows(result[0]))
    assert landmarker.refine == "detector"  # detected faces get the second pass, in the batch job too
    once = Landmarker(landmarker.model, landmarker.backend, landmarker.detector, refine="never")
    for name in FRONTAL[:3]:
        (face,) = landmarker.predict((folder / name).read_bytes())
        assert np.abs(np.asarray(rows[name][0]["landmarks"]) - face.landmarks).max() < 1e-6
        assert np.allclose(rows[name][0]["box"], face.box)
        (first,) = once.predict((folder / name).read_bytes())
        assert np.abs(first.landmarks - face.landmarks).max() > 1e-3


def test_parquet_reads_back_with_pandas(result: tuple[Path, str]) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(result[0])
    assert len(df) == 4 + 3 + 16 and df["source"].nunique() == 8
    assert df.loc[df["kind"] == "video", "frame"].max() == 15


def test_progress_shows_rates_and_eta(result: tuple[Path, str]) -> None:
    last = result[1].strip().splitlines()[-1]
    assert "frames" in last and "faces/s" in last and "ETA" in last
    # 6 images + 16 frames + 1 for the broken video (its frame count unknown, counted as one)
    assert last.split("]")[1].split()[0] == "23/23"


def test_draw_writes_annotated_images_and_video(result: tuple[Path, str], folder: Path) -> None:
    drawn = result[0].parent / "drawn"
    image = next(drawn.rglob(FRONTAL[0]))
    from PIL import Image

    original = np.asarray(Image.open(folder / FRONTAL[0]).convert("RGB"), dtype=np.int16)
    annotated = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
    assert annotated.shape == original.shape and np.abs(annotated - original).max() > 100
    video = next(drawn.rglob("pan.mp4"))
    assert len(list(read_video(video))) == 16


def test_resume_skips_inputs_already_done(landmarker: Landmarker, folder: Path, tmp_path: Path) -> None:
    photos = sorted(folder.glob("*.jpg"))
    out = tmp_path / "r.jsonl"
    job = BatchJob(landmarker, BatchOptions(workers=1))
    first = job.run(photos[:2], out, progress=False)
    second = job.run(photos, out, progress=False)
    assert (first.inputs, second.skipped, second.inputs) == (2, 2, len(photos) - 2)
    sources = [r["source"] for r in read_rows(out)]
    assert sorted(set(sources)) == sorted(str(p) for p in photos) and len(sources) == len(photos)
    again = job.run(photos, out, progress=False, resume=False)
    assert again.skipped == 0 and len(read_rows(out)) == len(photos)


def test_cli_interrupt_then_resume(folder: Path, photos: Path, tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT) mid-run keeps the finished inputs; the rerun does only the rest. 240 inputs
    (about 20 ms each on an idle machine), so the signal, sent once the progress line says 3 are done, lands
    while most are still to do. The child gets SIGINT's default action back: a test run started in the
    background by a non-interactive shell (``pytest &``, nohup) ignores SIGINT, and a child inherits that, so
    it would finish everything and exit 0."""
    n = 240
    many = tmp_path / "many"
    many.mkdir()
    src = (photos / FRONTAL[4]).read_bytes()  # a small photo
    for i in range(n):
        (many / f"p{i:03d}.jpg").write_bytes(src)
    out = tmp_path / "r.parquet"
    cmd = [sys.executable, "-m", "tools.cli", "batch", str(many), "--out", str(out), "--log-every", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        if f" 3/{n} images" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    done = {r["source"] for r in read_rows(out)}
    assert 3 <= len(done) < n
    rerun = subprocess.run(
        [*cmd, "--workers", "2"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    import json

    report = json.loads(rerun.stdout)
    assert report["skipped"] == len(done) and report["inputs"] == n - len(done)
    sources = [r["source"] for r in read_rows(out)]
    assert len(sources) == n and len(set(sources)) == n


def test_cli_refuses_an_unknown_output_suffix(tmp_path: Path, photos: Path) -> None:
    from runtime.batch.cli import main

    assert main([str(photos / FRONTAL[0]), "--out", str(tmp_path / "r.csv")]) == 2


def test_cli_views_reach_the_landmarker(
    tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``wingmark batch --views 5`` gives each face the facade's five-view answer; 4 is refused."""
    from runtime.batch.cli import main

    photo = photos / FRONTAL[0]
    out = tmp_path / "r.jsonl"
    assert main([str(photo), "--out", str(out), "--views", "5", "--no-progress"]) == 0
    (row,) = [r for r in read_rows(out) if r["landmarks"] is not None]
    with Landmarker.from_store(detector="dlib_hog", views=5) as five:
        want = five.predict(photo.read_bytes())[0].landmarks
    np.testing.assert_allclose(np.asarray(row["landmarks"]), want, atol=1e-3)
    with Landmarker.from_store(detector="dlib_hog") as one:
        assert np.abs(one.predict(photo.read_bytes())[0].landmarks - want).max() > 1e-2
    with pytest.raises(SystemExit):
        main([str(photo), "--out", str(tmp_path / "s.jsonl"), "--views", "4"])
    assert "invalid choice" in capsys.readouterr().err
