"""contract/jpeg.py decodes RGB and grey JPEGs with libjpeg-turbo directly (simplejpeg): the pixels must be
exactly Pillow's, for every subsampling, progressive files, grey, every EXIF orientation and every draft
scale; anything else (CMYK, damaged data) goes through Pillow and gets Pillow's verdict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from contract import jpeg
from contract import preprocess as pre
from contract.errors import ImageError, ImageTooLarge


def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(11 * xx + c) * np.cos(5 * yy - c) for c in (0.0, 1.3, 2.1)], -1)
    noise = np.random.default_rng(seed).normal(0, 9, base.shape)
    return ((base * 0.5 + 0.5) * 230 + noise).clip(0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, mode: str = "RGB", **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, "JPEG", **{"quality": 88, **save})
    return buf.getvalue()


def _pillow(data: bytes, draft_to: tuple[int, int] | None = None) -> np.ndarray:
    """Pillow's own decoder, by the module's rule (the path every non-JPEG takes)."""
    image = pre.open_image(data)
    if draft_to:
        image.draft(image.mode, draft_to)
    return pre.to_rgb(image)


@pytest.mark.parametrize("save", [
    {"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True},
    {"optimize": True, "quality": 60}, {"subsampling": 2, "restart_marker_blocks": 1},
], ids=["444", "422", "420", "progressive", "optimized", "restart-markers"])
def test_same_pixels_as_pillow(save):
    data = _jpeg(_pixels(97, 131), **save)  # odd sizes: partial MCUs at both edges
    assert jpeg.plain_header(data) == (97, 131), "a plain RGB JPEG is sized without Pillow"
    fast = jpeg.decode(data, 131, 97)
    assert fast is not None, "and decoded by libjpeg-turbo"
    np.testing.assert_array_equal(fast, _pillow(data))
    np.testing.assert_array_equal(pre.decode(data), _pillow(data))


def test_grey_jpeg_becomes_three_equal_channels_as_pillow_does():
    data = _jpeg(_pixels(64, 80), "L")
    assert jpeg.plain_header(data) == (64, 80)
    out = pre.decode(data)
    assert out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, _pillow(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_pillow_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(_pixels(40, 64), exif=exif)
    assert jpeg.plain_header(data) is None, "EXIF: Pillow reads the orientation"
    np.testing.assert_array_equal(jpeg.decode(data, 64, 40, orientation), _pillow(data))
    np.testing.assert_array_equal(pre.decode(data), _pillow(data))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_drafted_scales_equal_pillows_draft(scale):
    h, w = 900, 1203
    data = _jpeg(_pixels(h, w))
    want = (w // scale, h // scale)
    assert jpeg.draft_scale(w, h, *want) == scale
    fast = jpeg.decode(data, w, h, scale=scale)
    reference = _pillow(data, want)
    assert fast.shape == reference.shape == (-(-h // scale), -(-w // scale), 3)
    np.testing.assert_array_equal(fast, reference)


def test_decode_for_gives_pillows_pixels_through_either_decoder(monkeypatch):
    rule = pre.Resize(short_side=224, multiple_of=14)
    exif = Image.Exif()
    exif[0x0112] = 6
    for data in (_jpeg(_pixels(1200, 1800)), _jpeg(_pixels(700, 500), exif=exif), _jpeg(_pixels(224, 224))):
        fast = pre.decode_for(data, rule)
        monkeypatch.setattr(jpeg, "plain_header", lambda data: None)  # Pillow only, as before the fast path
        monkeypatch.setattr(jpeg, "decode", lambda *a, **k: None)
        slow = pre.decode_for(data, rule)
        monkeypatch.undo()
        np.testing.assert_array_equal(fast, slow)


def test_cmyk_and_damaged_jpegs_get_pillows_verdict():
    cmyk = _jpeg(_pixels(32, 48), "CMYK")
    assert jpeg.plain_header(cmyk) is None
    np.testing.assert_array_equal(pre.decode(cmyk), _pillow(cmyk))
    data = _jpeg(_pixels(120, 160))
    truncated = data[: len(data) // 2]
    with pytest.raises(ImageError, match="cannot decode"):
        pre.decode(truncated)
    with pytest.raises(ImageError):
        pre.decode_for(truncated, pre.Resize())
    corrupt = data[:400] + bytes(200) + data[600:]  # damaged scan data: whatever Pillow says, we say
    try:
        expected = _pillow(corrupt)
    except ImageError:
        with pytest.raises(ImageError):
            pre.decode(corrupt)
    else:
        np.testing.assert_array_equal(pre.decode(corrupt), expected)


def test_plain_header_refuses_what_it_cannot_vouch_for_and_the_size_limit_holds():
    data = _jpeg(_pixels(30, 40))
    assert jpeg.plain_header(data[:2]) is None and jpeg.plain_header(b"\xff\xd8\xff\xe0\x00") is None
    assert jpeg.plain_header(data[:20]) is None  # cut before the frame header
    png = io.BytesIO()
    Image.fromarray(_pixels(30, 40)).save(png, "PNG")
    assert jpeg.plain_header(png.getvalue()) is None
    with pytest.raises(ImageTooLarge, match="over the limit"):
        pre.decode(data, max_pixels=30 * 40 - 1)
    with pytest.raises(ImageTooLarge):
        pre.decode_for(data, pre.Resize(), max_pixels=30 * 40 - 1)


def test_exif_turned_png_is_sized_by_its_turned_shape():
    exif = Image.Exif()
    exif[0x0112] = 6
    png = io.BytesIO()
    Image.fromarray(_pixels(200, 300)).save(png, "PNG", exif=exif)
    out = pre.decode_for(png.getvalue(), pre.Resize(short_side=224, multiple_of=14))
    assert out.shape == (336, 224, 3)  # 300 tall once turned: not squashed into 224x336


def test_multi_picture_jpeg_from_a_phone_is_its_first_picture_turned_and_drafted():
    first, second = _pixels(1200, 900), _pixels(1200, 900, seed=1)[::-1]
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, "MPO", save_all=True, append_images=[Image.fromarray(second)], exif=exif, quality=88)
    data = buf.getvalue()
    assert pre.open_image(data).format == "MPO"
    np.testing.assert_array_equal(pre.decode(data), _pillow(data))
    rule = pre.Resize(short_side=224, multiple_of=14)
    drafted = pre.decode_for(data, rule)
    full = pre.prepare(_pillow(data), rule)
    assert drafted.shape == full.shape == (224, 294, 3)  # 900 wide, 1200 tall, turned: 1200 wide
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 1.0
