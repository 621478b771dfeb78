"""tools.client without a server: content types guessed from the bytes."""

from __future__ import annotations

from tests.service.images import encode, gradient
from tools.client import guess_content_type


def test_guess_content_type() -> None:
    assert guess_content_type(encode(gradient(), "PNG")) == "image/png"
    assert guess_content_type(encode(gradient(), "JPEG")) == "image/jpeg"
    assert guess_content_type(encode(gradient(), "WEBP")) == "image/webp"
    assert guess_content_type(encode(gradient(), "BMP")) == "image/bmp"
    assert guess_content_type(b"??") == "application/octet-stream"
