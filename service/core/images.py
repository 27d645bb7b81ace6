"""Image bytes -> RGB uint8 arrays at a size the model accepts.

Decoding runs in worker threads (never on the event loop). The declared size is checked
from the header before any pixel is decoded, so a small file claiming 50000x50000 costs
nothing. Any mode becomes RGB, EXIF orientation is applied, animations give their first frame.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.core.errors import BadRequest, InvalidImage, InvalidInput, PayloadTooLarge

# Our own limit (checked from the header) replaces Pillow's global bomb check.
Image.MAX_IMAGE_PIXELS = None

ResizePolicy = Literal["keep_aspect", "native", "stretch"]
_DATA_URI = re.compile(r"^data:([\w.+/-]*)(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white, as in a browser


@dataclass(frozen=True)
class ResizeRule:
    """The manifest's ``preprocessing.resize`` plus the model's patch size."""

    short_side: int
    multiple_of: int
    min_side: int
    max_side: int
    max_pixels: int

    @classmethod
    def from_manifest(cls, resize: dict, patch_size: int) -> "ResizeRule":
        multiple = int(resize.get("multiple_of", patch_size))
        return cls(
            short_side=int(resize.get("short_side", 224)),
            multiple_of=multiple,
            min_side=int(resize.get("min_side", multiple)),
            max_side=int(resize.get("max_side", 1036)),
            max_pixels=int(resize.get("max_pixels", int(resize.get("max_side", 1036)) ** 2)),
        )

    def check_resolution(self, height: int, width: int) -> None:
        for label, side in (("height", height), ("width", width)):
            if side % self.multiple_of:
                raise InvalidInput(f"resolution {label} {side} is not a multiple of {self.multiple_of}")
            if not self.min_side <= side <= self.max_side:
                raise InvalidInput(f"resolution {label} {side} is outside [{self.min_side}, {self.max_side}]")
        if height * width > self.max_pixels:
            raise InvalidInput(f"resolution {height}x{width} has more than {self.max_pixels} pixels")

    def target(self, height: int, width: int, policy: ResizePolicy = "keep_aspect", *,
               short_side: int | None = None, resolution: tuple[int, int] | None = None) -> tuple[int, int]:
        """Model input size (h, w) for a source image of ``height`` x ``width``."""
        if policy == "stretch":
            if resolution is None:
                raise InvalidInput("resize 'stretch' needs a resolution [height, width]")
            self.check_resolution(*resolution)
            return resolution
        if policy == "native":
            scale = 1.0
        else:
            scale = (short_side or self.short_side) / min(height, width)
        h, w = height * scale, width * scale
        shrink = min(1.0, self.max_side / max(h, w), math.sqrt(self.max_pixels / (h * w)))
        h, w = h * shrink, w * shrink
        m = self.multiple_of
        lo = math.ceil(self.min_side / m) * m
        hi = max(lo, self.max_side // m * m)
        th = min(hi, max(lo, round(h / m) * m))
        tw = min(hi, max(lo, round(w / m) * m))
        while th * tw > self.max_pixels and max(th, tw) > lo:  # rounding up may cross the area bound
            if th >= tw:
                th -= m
            else:
                tw -= m
        return th, tw


def decode_base64(text: str, index: int) -> bytes:
    """Plain base64 or a ``data:image/...;base64,`` URI; errors name the image's index."""
    if not isinstance(text, str):
        raise InvalidInput(f"image {index}: expected a base64 string", index=index)
    match = _DATA_URI.match(text)
    payload = text[match.end():] if match else text
    payload = "".join(payload.split())  # tolerate line-wrapped base64
    if not payload:
        raise BadRequest(f"image {index}: empty base64 string", index=index)
    try:
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image {index}: invalid base64 ({exc})", index=index) from None


def open_image(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """Open lazily and enforce the pixel limit from the header, before decoding."""
    if not data:
        raise InvalidImage(f"image {index}: empty (0 bytes)", index=index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage(f"image {index}: not a recognised image format ({len(data)} bytes)", index=index) from None
    except Exception as exc:  # Pillow raises many types on hostile headers
        raise InvalidImage(f"image {index}: cannot read image header: {exc}", index=index) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"image {index}: declares an empty size {width}x{height}", index=index)
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image {index}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}", index=index
        )
    return image


def to_rgb(image: Image.Image, index: int) -> np.ndarray:
    """Decode the first frame, apply EXIF orientation, convert any mode to RGB uint8."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _rgb_array(image)
    except (InvalidImage, PayloadTooLarge):
        raise
    except Exception as exc:
        raise InvalidImage(f"image {index}: cannot decode {image.format or 'image'}: {exc}", index=index) from None


def _rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit int) grey: scale the 16-bit range to 8 bits instead of clipping.
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(grey / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        if np.isfinite(grey).all() and grey.size and grey.max() <= 1.0:
            grey = grey * 255.0
        grey = np.clip(np.nan_to_num(grey), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB array to (h, w) with a bicubic, antialiased filter; a no-op when already there."""
    if array.shape[:2] == tuple(size):
        return np.ascontiguousarray(array)
    image = Image.fromarray(array, "RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def decode(data: bytes, index: int, *, max_pixels: int) -> np.ndarray:
    """Bytes -> RGB uint8 [H, W, 3] at the source size."""
    return to_rgb(open_image(data, index, max_pixels), index)
