"""JPEG files decoded by libjpeg-turbo straight into arrays (simplejpeg), for ``contract.preprocess``.

The pixels are exactly Pillow's (tests/contract/test_jpeg.py: every subsampling, progressive and
restart-marker files, grey, every EXIF orientation, every DCT scale): Pillow's wheels carry the
same library, called through its tile loop and copied out of the image afterwards; this path
skips both (a 224x224 photo: 0.33 ms against 0.52 on the benchmark machine). A plain JPEG (no
APP1 segment, hence no EXIF or XMP orientation for Pillow to apply) is sized from libjpeg-turbo's
own header parser without opening it in Pillow at all. Whatever this path does not take (CMYK,
data libjpeg warns about) goes to Pillow, which then gives its own verdict.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simplejpeg

# Pillow's names of the files this path reads: a JPEG, or a multi-picture JPEG (phone cameras) whose
# first picture, the one Pillow decodes, is the JPEG stream the file starts with.
FORMATS = ("JPEG", "MPO")
TURBO_MODES = ("RGB", "L")  # Pillow's modes for the JPEGs this path decodes
_TURBO_COLORSPACES = ("YCbCr", "Gray", "RGB")  # the same, as libjpeg-turbo's header names them
_APP1_MARKER = b"\xff\xe1"  # EXIF and XMP live in APP1 segments

# Pillow's ImageOps.exif_transpose for each EXIF orientation, on an [H, W, 3] array.
_TURN: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a),
}


def draft_scale(width: int, height: int, want_w: int, want_h: int) -> int:
    """The DCT scale (1, 2, 4 or 8) that keeps at least ``want_w`` x ``want_h``: Pillow's ``draft`` rule."""
    ratio = min(width // want_w, height // want_h)
    return next((s for s in (8, 4, 2) if ratio >= s), 1)


def plain_header(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an RGB or grey JPEG with no APP1 segment; None for anything else.

    The APP1 test looks for its marker anywhere in the file, at C speed: scan data cannot hold it (a
    0xFF there is followed by 0x00 or a restart marker), so a false alarm only comes from bytes inside
    another segment or after the image, and it merely sends the file to Pillow."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if data[:2] != b"\xff\xd8" or _APP1_MARKER in data:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (height, width) if colorspace in _TURBO_COLORSPACES and height > 0 and width > 0 else None


def decode(data: bytes, width: int, height: int, orientation: int = 1, scale: int = 1) -> np.ndarray | None:
    """RGB uint8 pixels of a ``width`` x ``height`` JPEG at 1/``scale``, turned by its EXIF ``orientation``;
    None where libjpeg warns about the data (Pillow decides then)."""
    try:
        array = simplejpeg.decode_jpeg(data, "RGB", min_width=-(-width // scale), min_height=-(-height // scale))
    except ValueError:
        return None
    turn = _TURN.get(orientation)
    return np.ascontiguousarray(turn(array)) if turn else array
