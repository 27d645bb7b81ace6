"""Decoding any image to RGB, the header pixel guard, base64, and the resize rule."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from service.core import images as img
from service.core.errors import BadRequest, InvalidImage, InvalidInput, PayloadTooLarge

RULE = img.ResizeRule(short_side=224, multiple_of=14, min_side=56, max_side=1036, max_pixels=1073296)


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose IHDR claims a size, with a few bytes of zeros as pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(1, 1), (224, 224), (480, 640), (1000, 10), (10, 1000), (5000, 3000), (37, 91)])
@pytest.mark.parametrize("policy", ["keep_aspect", "native"])
def test_resize_targets_are_multiples_within_bounds(size, policy):
    h, w = RULE.target(*size, policy)
    assert h % 14 == 0 and w % 14 == 0
    assert 56 <= h <= 1036 and 56 <= w <= 1036
    assert h * w <= RULE.max_pixels


def test_keep_aspect_scales_the_short_side_and_keeps_the_ratio():
    assert RULE.target(224, 224) == (224, 224)
    assert RULE.target(480, 640) == (224, 294)  # 298.7 rounds to 294 (nearest multiple of 14)
    assert RULE.target(640, 480) == (294, 224)
    assert RULE.target(100, 200, short_side=112) == (112, 224)
    h, w = RULE.target(300, 3000)  # 224 x 2240 is over max_side: scaled down, ratio kept as far as bounds allow
    assert w == 1036 and h == 98


def test_native_keeps_the_size_rounded():
    assert RULE.target(226, 300, "native") == (224, 294)


def test_stretch_needs_a_valid_resolution():
    assert RULE.target(10, 999, "stretch", resolution=(112, 84)) == (112, 84)
    with pytest.raises(InvalidInput, match="multiple of 14"):
        RULE.target(10, 10, "stretch", resolution=(100, 112))
    with pytest.raises(InvalidInput, match="outside"):
        RULE.target(10, 10, "stretch", resolution=(14, 112))
    with pytest.raises(InvalidInput, match="needs a resolution"):
        RULE.target(10, 10, "stretch")


def test_base64_plain_data_uri_and_wrapped_lines():
    raw = bytes(range(256))
    text = base64.b64encode(raw).decode()
    assert img.decode_base64(text, 0) == raw
    assert img.decode_base64("data:image/png;base64," + text, 0) == raw
    assert img.decode_base64("\n".join(text[i:i + 76] for i in range(0, len(text), 76)), 0) == raw
    assert img.decode_base64(text.rstrip("="), 0) == raw  # missing padding is tolerated


@pytest.mark.parametrize("bad", ["not base64!!", "ab$d", "data:image/png;base64,", "=" * 8])
def test_invalid_base64_names_the_index(bad):
    with pytest.raises(BadRequest) as err:
        img.decode_base64(bad, 3)
    assert err.value.index == 3 and "image 3" in err.value.message


def test_declared_size_over_the_limit_is_refused_from_the_header_without_allocating():
    data = png_header_only(50000, 50000)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as err:
            img.decode(data, 2, max_pixels=40_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.index == 2 and "50000x50000" in err.value.message
    assert peak < 5_000_000  # 50000^2 RGB would be 7.5 GB


@pytest.mark.parametrize("data", [b"", b"hello world, not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 20,
                                  b"\xff\xd8\xff\xe0" + bytes(range(200))])
def test_non_images_are_invalid_image_with_index(data):
    with pytest.raises(InvalidImage) as err:
        img.decode(data, 5, max_pixels=10**8)
    assert err.value.index == 5 and err.value.type == "invalid_image"


def test_truncated_png_and_jpeg_are_invalid():
    array = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = save(Image.fromarray(array), fmt)
        with pytest.raises(InvalidImage):
            img.decode(data[: len(data) // 2], 0, max_pixels=10**8)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    image = Image.fromarray(grey)  # mode I;16
    out = img.decode(save(image, "PNG"), 0, max_pixels=10**8)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255])


def test_palette_with_transparency_is_composited_on_white():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    pal.putpixel((1, 1), 1)
    data = save(pal, "PNG", transparency=0)  # index 0 (red) is transparent
    out = img.decode(data, 0, max_pixels=10**8)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1, 1], [0, 0, 255])


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "1", "I", "F", "YCbCr"])
def test_any_mode_becomes_rgb(mode):
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF", "YCbCr": "JPEG"}.get(mode, "PNG")
    out = img.decode(save(image, fmt), 0, max_pixels=10**8)
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = save(Image.fromarray(array), "JPEG", exif=exif, quality=95)
    out = img.decode(data, 0, max_pixels=10**8)
    assert out.shape == (40, 20, 3)  # upright: portrait
    assert out[:15].mean() > 200 and out[-15:].mean() < 50  # the white half is now on top


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = img.decode(buf.getvalue(), 0, max_pixels=10**8)
    assert out[8, 8, 0] > 200 and out[8, 8, 1] < 50


def test_resize_is_a_no_op_at_the_target_size():
    array = np.random.default_rng(1).integers(0, 256, (28, 42, 3), dtype=np.uint8)
    np.testing.assert_array_equal(img.resize(array, (28, 42)), array)
    assert img.resize(array, (56, 84)).shape == (56, 84, 3)
