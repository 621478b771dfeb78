from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.batch.inputs import InputError, expand_inputs, is_video, read_video, video_frame_count
from tests.runtime.batch.conftest import write_video


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_recurse_sorted_and_skip_other_files(tmp_path: Path) -> None:
    a = _touch(tmp_path / "d" / "b.jpg")
    b = _touch(tmp_path / "d" / "a.PNG")
    c = _touch(tmp_path / "d" / "sub" / "clip.mp4")
    _touch(tmp_path / "d" / "notes.md")
    _touch(tmp_path / "d" / ".hidden" / "x.jpg")
    assert expand_inputs([tmp_path / "d"]) == [b, a, c]


def test_globs_list_files_and_duplicates(tmp_path: Path) -> None:
    a = _touch(tmp_path / "p" / "one.jpg")
    b = _touch(tmp_path / "p" / "deep" / "two.jpeg")
    v = _touch(tmp_path / "v" / "c.ogv")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# photos\np/one.jpg\n\nv\n")
    named = tmp_path / "more.list"
    named.write_text(f"{b}\n")
    assert expand_inputs([str(tmp_path / "p" / "**" / "*.jp*g")]) == [b, a]
    assert expand_inputs([listing, f"@{named}", a]) == [a, v, b]  # relative to the list; each once


@pytest.mark.parametrize("spec", ["missing.jpg", "nothing/*.jpg"])
def test_missing_inputs_are_errors(tmp_path: Path, spec: str) -> None:
    with pytest.raises(InputError):
        expand_inputs([str(tmp_path / spec)])


def test_a_file_that_is_not_media_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an image or video"):
        expand_inputs([_touch(tmp_path / "data.csv")])


def test_video_by_suffix() -> None:
    assert is_video("a/b.MP4") and is_video("s3://bucket/x.mov") and not is_video("a.jpg")


def test_read_video_frames_in_order_with_times(tmp_path: Path) -> None:
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(7)]
    path = write_video(tmp_path / "ramp.mp4", frames, fps=5)
    got = list(read_video(path, prefetch=2))
    assert [f.index for f in got] == list(range(7))
    assert np.allclose([f.time for f in got], np.arange(7) / 5, atol=1e-6)
    assert got[3].pixels.shape == (32, 48, 3)
    assert abs(float(got[3].pixels.mean()) - 30) < 3  # the frames' own content, in order
    assert video_frame_count(path) == 7
    assert list(read_video(path.read_bytes()))[6].index == 6  # from bytes (Ray reads bytes)


def test_read_video_raises_on_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(Exception):  # noqa: B017 -- PyAV's own error type (an OSError subclass)
        list(read_video(bad))


def test_stopping_early_releases_the_decoder(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long.mp4", [np.zeros((16, 16, 3), np.uint8)] * 40, fps=10)
    it = read_video(path, prefetch=1)
    assert next(iter(it)).index == 0
    it.close()  # returns: the decoding thread does not stay blocked on a full queue
