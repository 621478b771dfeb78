"""``wingmark predict`` in-process: prints the result, draws it, and turns a bad request into exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.images import encode

FACE = encode(np.asarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3)), np.uint8), "PNG")


def test_predict_in_process_prints_and_draws(
    test_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.predict import main

    monkeypatch.setenv("WINGMARK_MODEL_ROOT", str(test_store))
    monkeypatch.setenv("WINGMARK_DETECTOR", "none")
    image = tmp_path / "face.png"
    image.write_bytes(FACE)
    out = tmp_path / "drawn.png"
    assert (
        main([str(image), "--box", "20,20,140,140", "--scheme", "aflw19", "--json", "--draw", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    result = json.loads(printed[: printed.rindex("}") + 1])
    assert result["model"]["name"] == "test-aflw19" and len(result["faces"][0]["landmarks"]) == 19
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    original = np.asarray(Image.open(image).convert("RGB")).astype(int)
    assert drawn.shape == original.shape and (np.abs(drawn - original).sum(axis=2) > 0).sum() > 50
    x, y = (round(v) for v in result["faces"][0]["landmarks"][18])  # the chin point is painted red
    assert tuple(drawn[y, x]) == (255, 60, 60)
    assert main([str(image), "--box", "200,200,300,300"]) == 1  # box outside the image: a clean error
    assert "lies outside the 160x160 image" in capsys.readouterr().err
