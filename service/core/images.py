"""Image bytes -> RGB uint8 arrays at a size the model accepts.

The decoding and resizing rules are the contract's (``contract/preprocess.py``, shared
with the tool); this module adds the wire (base64, data URIs) and maps the contract's
errors to the service's, naming the image's index. Decoding runs in worker threads (never
on the event loop). The declared size is checked from the header before any pixel is
decoded, so a small file claiming 50000x50000 costs nothing.
"""

from __future__ import annotations

import binascii
import re
from typing import Literal

import numpy as np
import pybase64
from PIL import Image

from contract import preprocess
from contract.errors import ImageError, ImageTooLarge, ResizeError
from contract.preprocess import Resize
from service.core.errors import BadRequest, InvalidImage, InvalidInput, PayloadTooLarge

# Our own limit (checked from the header) replaces Pillow's global bomb check.
Image.MAX_IMAGE_PIXELS = None

ResizePolicy = Literal["keep_aspect", "native", "stretch"]
_DATA_URI = re.compile(r"^data:([\w.+/-]*)(;[\w=.+-]+)*;base64,", re.IGNORECASE)


class ResizeRule(Resize):
    """The contract's ``Resize`` (the manifest's ``preprocessing.resize``), its errors as 422s."""

    def check_resolution(self, height: int, width: int) -> None:
        try:
            super().check_resolution(height, width)
        except ResizeError as exc:
            raise InvalidInput(str(exc)) from None

    def target(self, height: int, width: int, policy: ResizePolicy | None = None, **kwargs) -> tuple[int, int]:
        """Model input size (h, w) for a source image of ``height`` x ``width``."""
        try:
            return super().target(height, width, policy, **kwargs)
        except ResizeError as exc:
            raise InvalidInput(str(exc)) from None

    @classmethod
    def of(cls, resize: Resize) -> "ResizeRule":
        return cls.model_validate(resize.model_dump())


def decode_base64(text: str, index: int) -> bytes:
    """Plain base64 or a ``data:image/...;base64,`` URI; errors name the image's index."""
    if not isinstance(text, str):
        raise InvalidInput(f"image {index}: expected a base64 string", index=index)
    match = _DATA_URI.match(text)
    payload = text[match.end():] if match else text
    if payload:
        try:
            return pybase64.b64decode(payload, validate=True)  # SIMD; the usual case: one clean, padded string
        except (binascii.Error, ValueError):
            pass
    payload = "".join(payload.split())  # tolerate line-wrapped and unpadded base64
    if not payload:
        raise BadRequest(f"image {index}: empty base64 string", index=index)
    try:
        return pybase64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image {index}: invalid base64 ({exc})", index=index) from None


def decode(data: bytes, index: int, *, max_pixels: int) -> np.ndarray:
    """Bytes -> RGB uint8 [H, W, 3] at the source size (the contract's rule); errors name the index."""
    try:
        return preprocess.decode(data, max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(f"image {index}: {exc}", index=index) from None
    except ImageError as exc:
        raise InvalidImage(f"image {index}: {exc}", index=index) from None


def prepare(array: np.ndarray, rule: ResizeRule, policy: ResizePolicy, *, short_side: int | None = None,
            resolution: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded pixels -> the model's input pixels (the contract's ``prepare``), bad sizes as 422s."""
    try:
        return preprocess.prepare(array, rule, policy, short_side=short_side, resolution=resolution)
    except ResizeError as exc:
        raise InvalidInput(str(exc)) from None


def decode_for(data: bytes, index: int, rule: ResizeRule, policy: ResizePolicy, *, short_side: int | None = None,
               resolution: tuple[int, int] | None = None, max_pixels: int, draft: bool = True) -> np.ndarray:
    """Bytes -> the model's input pixels in one step (the contract's ``decode_for``: a large JPEG is drafted)."""
    try:
        return preprocess.decode_for(data, rule, policy, short_side=short_side, resolution=resolution,
                                     max_pixels=max_pixels, draft=draft)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(f"image {index}: {exc}", index=index) from None
    except ResizeError as exc:
        raise InvalidInput(str(exc)) from None
    except ImageError as exc:
        raise InvalidImage(f"image {index}: {exc}", index=index) from None


resize = preprocess.resize
