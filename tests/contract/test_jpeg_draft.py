"""contract.preprocess.decode_for: a large JPEG drafted (DCT-scaled) first gives the same size and nearly the same pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from contract import preprocess
from contract.preprocess import Resize

RULE = Resize(short_side=224, multiple_of=14)


def _photo(h: int, w: int, fmt: str = "JPEG", exif: Image.Exif | None = None) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(9 * xx + c) * np.cos(7 * yy - c) for c in (0.0, 1.0, 2.0)], -1)
    noise = np.random.default_rng(0).normal(0, 6, base.shape)
    pixels = ((base * 0.5 + 0.5) * 220 + noise).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, quality=90, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def _full(data: bytes, policy: str = "keep_aspect") -> np.ndarray:
    return preprocess.prepare(preprocess.decode(data), RULE, policy)


def test_large_jpeg_is_drafted_to_the_same_size_and_nearly_the_same_pixels():
    data = _photo(1200, 1800)
    with Image.open(io.BytesIO(data)) as probe:
        probe.draft(probe.mode, (2 * 336, 2 * 224))
        assert probe.size[0] < 1800  # libjpeg really scales this one
    drafted = preprocess.decode_for(data, RULE)
    full = _full(data)
    assert drafted.shape == full.shape == (224, 336, 3)
    diff = np.abs(drafted.astype(int) - full.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_small_jpeg_and_other_formats_decode_in_full():
    for data in (_photo(400, 600), _photo(1200, 1800, "PNG")):
        np.testing.assert_array_equal(preprocess.decode_for(data, RULE), _full(data))
    data = _photo(1200, 1800)
    np.testing.assert_array_equal(preprocess.decode_for(data, RULE, draft=False), _full(data))


def test_exif_turned_jpeg_keeps_its_oriented_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: the file is 1800 wide, the picture 1800 tall
    data = _photo(1200, 1800, exif=exif)
    drafted = preprocess.decode_for(data, RULE)
    full = _full(data)
    assert drafted.shape == full.shape == (336, 224, 3)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 1.0


def test_policies_other_than_keep_aspect():
    data = _photo(1200, 1800)
    for policy in ("center_square", "native"):
        assert preprocess.decode_for(data, RULE, policy).shape == _full(data, policy).shape
    assert preprocess.decode_for(data, RULE, "stretch", resolution=(112, 140)).shape == (112, 140, 3)
