"""Image decoding: formats, modes, EXIF orientation, reduced JPEG decoding, bombs and broken files."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from runtime.decode import ImageDecodeError, ImageTooLargeError, decode_image
from tests.service.images import (
    bomb_png,
    encode,
    exif_orientation_jpeg,
    exif_rotated_jpeg,
    gradient,
    mpo,
    png16_rgb,
    tiff_ifd_chain,
    truncated,
)

LIMIT = 10_000_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb_uint8(fmt: str) -> None:
    pixels = gradient()
    params = {"quality": 95} if fmt in {"JPEG", "WEBP"} else {}
    out = decode_image(encode(pixels, fmt, **params), max_pixels=LIMIT)
    assert out.pixels.shape == (64, 96, 3) and out.pixels.dtype == np.uint8
    assert (out.width, out.height, out.format) == (96, 64, fmt)
    tolerance = 40 if fmt == "GIF" else 12  # GIF quantises to a palette
    assert np.abs(out.pixels.astype(int) - pixels.astype(int)).mean() < tolerance


def test_greyscale_rgba_palette_cmyk_modes() -> None:
    pixels = gradient()
    grey = decode_image(encode(Image.fromarray(pixels).convert("L"), "PNG"), max_pixels=LIMIT)
    assert grey.mode == "L" and grey.pixels.shape == (64, 96, 3)
    assert (grey.pixels[..., 0] == grey.pixels[..., 2]).all()
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 128, np.uint8)])
    out = decode_image(encode(rgba, "PNG"), max_pixels=LIMIT)
    assert out.mode == "RGBA" and (out.pixels == pixels).all()
    pal = decode_image(encode(Image.fromarray(pixels).convert("P"), "PNG"), max_pixels=LIMIT)
    assert pal.mode == "P" and np.abs(pal.pixels.astype(int) - pixels.astype(int)).mean() < 40
    cmyk = decode_image(encode(Image.fromarray(pixels).convert("CMYK"), "JPEG", quality=95), max_pixels=LIMIT)
    assert cmyk.mode == "CMYK" and np.abs(cmyk.pixels.astype(int) - pixels.astype(int)).mean() < 12


def test_16_bit_greyscale_and_rgb_are_scaled_not_clipped() -> None:
    grey16 = (np.linspace(0, 65535, 64 * 96).reshape(64, 96)).astype(np.uint16)
    out = decode_image(encode(Image.fromarray(grey16), "PNG"), max_pixels=LIMIT)
    assert out.pixels[0, 0, 0] == 0 and out.pixels[-1, -1, 0] == 255
    assert abs(int(out.pixels[32, 48, 0]) - int(grey16[32, 48] >> 8)) <= 1
    rgb16 = gradient().astype(np.uint16) * 257
    out = decode_image(png16_rgb(rgb16), max_pixels=LIMIT)
    assert np.abs(out.pixels.astype(int) - gradient().astype(int)).max() <= 1


def test_exif_orientation_is_applied() -> None:
    stored = gradient(96, 64)
    out = decode_image(exif_rotated_jpeg(stored, 6), max_pixels=LIMIT)  # 6: rotate 90° clockwise to display
    assert out.orientation == 6
    assert (out.width, out.height) == (64, 96) and out.pixels.shape == (96, 64, 3)
    # After a clockwise turn, the stored image's left column (R = 0) is the displayed top row.
    assert out.pixels[0, :, 0].mean() < 30 and out.pixels[-1, :, 0].mean() > 220


def test_large_jpeg_is_decoded_reduced_and_reports_its_scale() -> None:
    pixels = np.asarray(Image.fromarray(gradient(64, 48)).resize((2048, 1536)))
    out = decode_image(encode(pixels, "JPEG", quality=90), max_pixels=LIMIT, max_side=512)
    assert (out.width, out.height) == (2048, 1536)
    assert out.pixels.shape == (384, 512, 3)  # 1/4: the largest reduction keeping the long side >= 512
    assert out.scale_x == pytest.approx(4.0) and out.scale_y == pytest.approx(4.0)
    full = decode_image(encode(pixels, "JPEG", quality=90), max_pixels=LIMIT, max_side=2048)
    assert full.pixels.shape == (1536, 2048, 3) and full.scale_x == 1.0


def test_pixel_limit_refuses_a_bomb_before_decoding() -> None:
    data = bomb_png(30000, 30000)
    assert len(data) < 10_000
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=LIMIT)
    with pytest.raises(ImageTooLargeError):
        decode_image(encode(gradient(), "PNG"), max_pixels=96 * 64 - 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        truncated(encode(gradient(), "JPEG", quality=90), 0.4),
        truncated(encode(gradient(), "PNG"), 0.5),
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    ],
    ids=["empty", "text", "truncated-jpeg", "truncated-png", "broken-png-header"],
)
def test_undecodable_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data, max_pixels=LIMIT)


def test_unsupported_format_is_named() -> None:
    data = encode(gradient(), "ICO")
    with pytest.raises(ImageDecodeError, match="unsupported image format"):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
def test_reduce_decodes_a_jpeg_at_exactly_that_dct_scale(reduce: int) -> None:
    """reduce (the faces' choice) replaces max_side's rule; EXIF-turned images too."""
    pixels = np.asarray(Image.fromarray(gradient(64, 48)).resize((1920, 1080)))
    out = decode_image(encode(pixels, "JPEG", quality=90), max_pixels=LIMIT, max_side=256, reduce=reduce)
    assert out.pixels.shape == (1080 // reduce, 1920 // reduce, 3)
    assert (out.width, out.height) == (1920, 1080) and out.scale_x == pytest.approx(reduce)
    turned = decode_image(exif_rotated_jpeg(gradient(96, 64), 6), max_pixels=LIMIT, reduce=reduce)
    assert (turned.width, turned.height) == (64, 96)
    assert turned.pixels.shape == (96 // reduce, 64 // reduce, 3)


def test_reduce_leaves_other_formats_whole_and_is_checked() -> None:
    png = encode(gradient(64, 48), "PNG")
    assert decode_image(png, max_pixels=LIMIT, reduce=4).pixels.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="reduce"):
        decode_image(png, max_pixels=LIMIT, reduce=3)


# -- EXIF exactly as PIL.ImageOps.exif_transpose, whatever the tag's type ---------------------------------
@pytest.mark.parametrize(
    "kind, values",
    [("SHORT", (6,)), ("SHORT", (3,)), ("SHORT", (8,)), ("SHORT", (9,)), ("SHORT", (0,)), ("LONG", (6,)),
     ("BYTE", (5,)), ("ASCII", ("6",)), ("RATIONAL", ((6, 1),)), ("RATIONAL", ((13, 2),)),
     ("RATIONAL", ((12, 2),)), ("FLOAT", (6.0,)), ("FLOAT", (6.5,)), ("DOUBLE", (8.0,)), ("SHORT", (6, 3))],
    ids=lambda v: str(v),
)  # fmt: skip
def test_exif_orientation_of_any_type_is_read_exactly_as_exif_transpose(
    kind: str, values: tuple[object, ...]
) -> None:
    stored = gradient(96, 64)
    data = exif_orientation_jpeg(stored, kind, *values)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    out = decode_image(data, max_pixels=LIMIT)
    assert (out.width, out.height) == expected.size
    assert (out.pixels == np.asarray(expected)).all()
    turned = (
        expected.size != (96, 64)
        or not (np.asarray(expected) == np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).all()
    )
    assert (out.orientation != 1) == turned


def test_a_reduced_jpeg_decode_keeps_the_orientation_and_the_original_size() -> None:
    stored = np.asarray(Image.fromarray(gradient(96, 64)).resize((1536, 1024)))
    out = decode_image(exif_orientation_jpeg(stored, "RATIONAL", (6, 1)), max_pixels=LIMIT, max_side=256)
    assert (out.width, out.height, out.orientation) == (1024, 1536, 6)
    assert out.pixels.shape == (384, 256, 3) and out.scale_x == pytest.approx(4.0)


# -- 16-bit and float images scaled by their range -----------------------------------------------------
@pytest.mark.parametrize("top", [1.0, 255.0, 65535.0])
def test_float_images_are_scaled_by_the_range_they_use(top: float) -> None:
    ramp = np.linspace(0.0, 1.0, 64 * 96, dtype=np.float32).reshape(64, 96)
    out = decode_image(encode(Image.fromarray(ramp * np.float32(top), mode="F"), "TIFF"), max_pixels=LIMIT)
    assert out.mode == "F"
    expected = np.round(ramp * 255.0)
    assert np.abs(out.pixels[..., 0].astype(float) - expected).max() <= 1.0


def test_float_images_with_negative_or_huge_values_or_nan_are_stretched_to_their_own_range() -> None:
    ramp = np.linspace(-3.0, 5.0, 64 * 96, dtype=np.float32).reshape(64, 96)
    ramp[0, 1] = np.nan
    out = decode_image(encode(Image.fromarray(ramp, mode="F"), "TIFF"), max_pixels=LIMIT)
    assert out.pixels[0, 0, 0] == 0 and out.pixels[-1, -1, 0] == 255 and out.pixels[0, 1, 0] == 0
    assert abs(int(out.pixels[32, 48, 0]) - 128) <= 2


def test_32_bit_integer_images_use_the_8_or_16_bit_range_their_values_fit() -> None:
    ints = np.linspace(0, 200, 64 * 96).reshape(64, 96).astype(np.int32)
    out = decode_image(encode(Image.fromarray(ints, mode="I"), "TIFF"), max_pixels=LIMIT)
    assert out.pixels[-1, -1, 0] == 200  # 0..255 kept as it is
    ints = np.linspace(0, 65535, 64 * 96).reshape(64, 96).astype(np.int32)
    out = decode_image(encode(Image.fromarray(ints, mode="I"), "TIFF"), max_pixels=LIMIT)
    expected = np.round(ints / 65535 * 255)
    assert np.abs(out.pixels[..., 0] - expected).max() <= 1 and out.pixels[-1, -1, 0] == 255


# -- multi-picture files: the first picture, with bounded work --------------------------------------------
def test_an_mpo_jpeg_is_decoded_as_its_first_picture() -> None:
    first, second = gradient(96, 64), np.full((64, 96, 3), 255, np.uint8)
    out = decode_image(mpo(first, second), max_pixels=LIMIT)
    assert out.format == "MPO" and (out.width, out.height) == (96, 64)
    assert np.abs(out.pixels.astype(int) - first.astype(int)).mean() < 12


def test_a_tiff_with_40000_chained_ifds_decodes_its_first_frame_without_walking_them() -> None:
    data = tiff_ifd_chain(40_000)
    started = time.perf_counter()
    out = decode_image(data, max_pixels=LIMIT)
    elapsed = time.perf_counter() - started
    assert out.pixels.shape == (16, 16, 3) and (out.pixels == 90).all()
    assert elapsed < 0.5, elapsed  # walking the chain takes several seconds


def test_an_animated_gif_is_decoded_as_its_first_frame() -> None:
    frames = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (40, 200, 120)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), max_pixels=LIMIT)
    assert abs(int(out.pixels.mean()) - 40) <= 2


# -- simplejpeg (the fast extra) gives Pillow's pixels, at Pillow's DCT scale ------------------------------
def _photo(w: int, h: int) -> np.ndarray:
    """Smooth colour plus grain (so every 8x8 block codes texture), [h, w, 3] uint8."""
    rng = np.random.default_rng(w * h)
    base = np.asarray(Image.fromarray(gradient(64, 48)).resize((w, h)), dtype=np.float32)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
@pytest.mark.parametrize(("w", "h"), [(1920, 1080), (1001, 667)])
def test_simplejpeg_and_pillow_decode_the_same_pixels(
    reduce: int, w: int, h: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    simplejpeg = pytest.importorskip("simplejpeg")
    from runtime.decode import jpeg_decoder

    assert jpeg_decoder().startswith("simplejpeg")
    shapes: list[tuple[int, ...]] = []
    decode = simplejpeg.decode_jpeg

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        pixels: np.ndarray = decode(*args, **kwargs)
        shapes.append(pixels.shape)
        return pixels

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    data = encode(_photo(w, h), "JPEG", quality=90)
    fast = decode_image(data, max_pixels=LIMIT, reduce=reduce)
    assert shapes == [fast.pixels.shape]  # simplejpeg decoded it, at the scale asked for
    slow = decode_image(data, max_pixels=LIMIT, reduce=reduce, jpeg="pillow")
    assert fast.pixels.shape == slow.pixels.shape == (-(-h // reduce), -(-w // reduce), 3)
    np.testing.assert_array_equal(fast.pixels, slow.pixels)
    assert (fast.width, fast.height, fast.scale_x) == (slow.width, slow.height, slow.scale_x)
    # max_side's rule (no reduce): the same scale as Pillow's draft too
    by_side = [decode_image(data, max_pixels=LIMIT, max_side=300, jpeg=j).pixels for j in ("auto", "pillow")]
    np.testing.assert_array_equal(by_side[0], by_side[1])


@pytest.mark.parametrize("turn", [3, 6, 8])
def test_simplejpeg_greyscale_and_exif_turned_jpegs_match_pillow(turn: int) -> None:
    pytest.importorskip("simplejpeg")
    grey = encode(Image.fromarray(_photo(96, 64)).convert("L"), "JPEG", quality=90)
    fast, slow = (decode_image(grey, max_pixels=LIMIT, reduce=2, jpeg=j) for j in ("auto", "pillow"))
    assert fast.mode == "L" and fast.pixels.shape == (32, 48, 3)
    np.testing.assert_array_equal(fast.pixels, slow.pixels)
    data = exif_rotated_jpeg(_photo(96, 64), turn)
    fast, slow = (decode_image(data, max_pixels=LIMIT, reduce=2, jpeg=j) for j in ("auto", "pillow"))
    assert fast.orientation == turn and (fast.width, fast.height) == (slow.width, slow.height)
    np.testing.assert_array_equal(fast.pixels, slow.pixels)


def test_a_jpeg_libjpeg_warns_about_is_left_to_pillow() -> None:
    """Bytes after the end-of-image marker are only a warning: simplejpeg (strict) refuses the file,
    Pillow decodes it; so does decode_image. Truncated JPEGs stay refused (test above)."""
    simplejpeg = pytest.importorskip("simplejpeg")
    good = encode(_photo(96, 64), "JPEG", quality=90)
    data = good[:-2] + b"\x00" * 64 + good[-2:]  # junk before the EOI marker
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(data, "RGB")
    out = decode_image(data, max_pixels=LIMIT)
    np.testing.assert_array_equal(out.pixels, decode_image(data, max_pixels=LIMIT, jpeg="pillow").pixels)
