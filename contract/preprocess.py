"""Image preprocessing, written once: bytes or a file in, RGB uint8 pixels at the model's
input size out (normalisation is inside the graph; ``normalise`` gives the same float
tensor for PyTorch).

Decoding: the first frame, with its EXIF orientation applied. RGB and grey JPEGs are decoded
by libjpeg-turbo straight into an array (contract/jpeg.py; the same pixels as Pillow's), every
other file by Pillow. Every mode becomes RGB by one rule:

| source mode | RGB |
|---|---|
| 8-bit (L, P, CMYK, YCbCr, 1, ...) | Pillow's conversion |
| with alpha (RGBA, LA, PA, P with transparency) | composited over white, as a browser shows it |
| 16-bit and 32-bit integer grey (I;16*, I) | value / 257, rounded and clipped: the 16-bit range maps onto 0..255 |
| float grey (F) | an image whose finite values all lie in [0, 1] is scaled by 255, any other is clipped to 0..255; NaN and infinities become 0 |

Grey becomes three equal channels. Except for float images (which carry no range of their
own), the rule depends on the pixel only, never on the rest of the image, so a crop of a
photo gives the same pixels as the photo.

Resize (``Resize``, the manifest's ``preprocessing.resize``), bicubic with Pillow's
antialiasing, by ``policy``:

| policy | size |
|---|---|
| ``keep_aspect`` | shorter side to ``short_side``, both sides rounded to ``multiple_of`` (the serving default) |
| ``native`` | the image's own size, rounded the same way |
| ``stretch`` | exactly the given ``resolution`` |
| ``center_square`` | the centred square crop of the image, then its side to ``short_side`` (the repair's training crop) |

Every result is kept within ``[min_side, max_side]`` per side and ``max_pixels`` in area.

A JPEG at least twice its target size on both sides is decoded by libjpeg at 1/2, 1/4 or 1/8
scale (DCT scaling, Pillow's ``draft``) to no less than twice the target, then resized as any
image (``decode_for``, ``load``). Measured on photo-like JPEGs to a 224 short side
(bench/frontend_bench.py ``draft_figures``): decode and resize 2x faster for a 2 MP photo and 5x
for a 12 MP one, pixels within 4 levels of full decoding (mean |difference| 0.2 to 0.3 of 255);
a 0.3 MP photo (under 4x its target) decodes in full, unchanged. The margin of 2 keeps the final
bicubic antialiased step a real downscale: decoding straight to the target (margin 1) was faster
still but up to 10 levels off (mean 1.5 on the 0.3 MP photo). ``draft=False`` decodes in full.
"""

from __future__ import annotations

import io
import math
import warnings
from os import PathLike
from typing import Literal

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import jpeg
from .errors import ImageError, ImageTooLarge, ResizeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Policy = Literal["keep_aspect", "native", "stretch", "center_square"]
POLICIES: tuple[str, ...] = ("keep_aspect", "native", "stretch", "center_square")
BACKGROUND = (255, 255, 255)  # transparent pixels are shown over white
# Pillow's readers for raster image files, by its names (JPEG includes multi-picture MPO). Not the rest:
# EPS runs Ghostscript on the file where it is installed, and the scientific and legacy formats add
# parsers that a photo never needs.
FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "TIFF", "BMP", "DIB", "ICO", "TGA", "PPM", "JPEG2000", "QOI")


def image_suffixes() -> tuple[str, ...]:
    """File name suffixes of the accepted formats (for searching folders), from Pillow's own table."""
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in (*FORMATS, "MPO")))
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_INT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class Resize(BaseModel):
    """How an image is sized for the model; the manifest's ``preprocessing.resize``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Policy = Field("keep_aspect", description="Default policy (see contract/preprocess.py).")
    short_side: int = Field(224, ge=1, description="Shorter side after resizing (keep_aspect, center_square).")
    multiple_of: int = Field(14, ge=1, description="Both sides are rounded to a multiple of this (the patch size).")
    min_side: int = Field(56, ge=1, description="Smallest side the graph accepts.")
    max_side: int = Field(1036, ge=1, description="Largest side the graph accepts.")
    max_pixels: int = Field(1036 * 1036, ge=1, description="Largest area (height x width) the graph accepts.")

    @model_validator(mode="after")
    def _consistent(self) -> "Resize":
        if not self.min_side <= self.short_side <= self.max_side:
            raise ValueError(f"need min_side <= short_side <= max_side, got {self.min_side}, {self.short_side}, "
                             f"{self.max_side}")
        if self.max_side < self.multiple_of or self.max_pixels < self.min_side * self.min_side:
            raise ValueError("max_side must reach multiple_of and max_pixels must reach min_side^2")
        return self

    def check_resolution(self, height: int, width: int) -> None:
        for label, side in (("height", height), ("width", width)):
            if side % self.multiple_of:
                raise ResizeError(f"resolution {label} {side} is not a multiple of {self.multiple_of}")
            if not self.min_side <= side <= self.max_side:
                raise ResizeError(f"resolution {label} {side} is outside [{self.min_side}, {self.max_side}]")
        if height * width > self.max_pixels:
            raise ResizeError(f"resolution {height}x{width} has more than {self.max_pixels} pixels")

    def target(self, height: int, width: int, policy: str | None = None, *, short_side: int | None = None,
               resolution: tuple[int, int] | None = None) -> tuple[int, int]:
        """Model input size (h, w) for a source image of ``height`` x ``width``."""
        policy = policy or self.policy
        if policy == "stretch":
            if resolution is None:
                raise ResizeError("resize 'stretch' needs a resolution [height, width]")
            self.check_resolution(*resolution)
            return tuple(resolution)
        if policy == "center_square":
            height = width = min(height, width)
        elif policy not in POLICIES:
            raise ResizeError(f"resize policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        scale = 1.0 if policy == "native" else (short_side or self.short_side) / min(height, width)
        return self._bounded(height * scale, width * scale)

    def _bounded(self, h: float, w: float) -> tuple[int, int]:
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


# -- decoding ---------------------------------------------------------------------------
def open_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Open lazily and enforce ``max_pixels`` from the header, before any pixel is decoded."""
    if not data:
        raise ImageError("empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image format ({len(data)} bytes); accepted: {', '.join(FORMATS)}") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:  # Pillow raises many types on hostile headers
        raise ImageError(f"cannot read image header: {exc}") from None
    _check_size(*image.size, max_pixels)
    return image


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"declares an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}")


def to_rgb(image: Image.Image) -> np.ndarray:
    """Decode the first frame, apply EXIF orientation, convert by the module's rule to RGB uint8 ``[H, W, 3]``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image that needs no turn
            return rgb_array(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:
        raise ImageError(f"cannot decode {image.format or 'image'}: {exc}") from None


def rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded image of any mode as RGB uint8 (the table in the module docstring)."""
    mode = image.mode
    if mode in _INT_GREY_MODES or mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(grey)
        grey = np.where(finite, grey, 0.0)
        if mode in _INT_GREY_MODES:
            grey = grey / 257.0
        elif finite.any() and grey[finite].min() >= 0.0 and grey[finite].max() <= 1.0:
            grey = grey * 255.0
        grey = np.clip(grey, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class _Source:
    """An image file read as far as its header: by Pillow (lazily), or, for a plain JPEG, by libjpeg-turbo alone."""

    data: bytes
    width: int  # as stored, before any EXIF turn
    height: int
    orientation: int = 1  # EXIF, of a JPEG (other formats are turned as they are decoded)
    image: Image.Image | None = None  # None: a plain JPEG (contract/jpeg.py)

    @property
    def is_jpeg(self) -> bool:
        return self.image is None or self.image.format in jpeg.FORMATS


def _open(data: bytes, max_pixels: int | None) -> _Source:
    """The file's size and orientation, checked against ``max_pixels`` before any pixel is decoded."""
    header = jpeg.plain_header(data)
    if header is None:
        image = open_image(data, max_pixels)
        # Only a JPEG's EXIF is read before decoding: Pillow decodes a PNG to look for its eXIf chunk.
        return _Source(data, *image.size, _orientation(image) if image.format in jpeg.FORMATS else 1, image)
    height, width = header
    _check_size(width, height, max_pixels)
    return _Source(data, width, height)


def _pixels(source: _Source, scale: int = 1, want: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 pixels, oriented; a JPEG at 1/``scale`` (``want``: the size asked of Pillow's draft for it)."""
    if source.image is None or (source.is_jpeg and source.image.mode in jpeg.TURBO_MODES):
        array = jpeg.decode(source.data, source.width, source.height, source.orientation, scale)
        if array is not None:
            return array
    image = source.image or open_image(source.data)  # libjpeg warned: Pillow decides
    if scale > 1:
        image.draft(image.mode, want)  # the same scale, by the same rule
    return to_rgb(image)


def decode(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Image bytes -> RGB uint8 ``[H, W, 3]`` at the source size."""
    return _pixels(_open(data, max_pixels))


def _read(path: str | PathLike) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageError(f"image {path} does not exist") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None


def decode_file(path: str | PathLike, max_pixels: int | None = None) -> np.ndarray:
    """An image file -> RGB uint8 ``[H, W, 3]``; errors name the file."""
    data = _read(path)
    try:
        return decode(data, max_pixels)
    except ImageError as exc:
        raise type(exc)(f"image {path}: {exc}") from None


DRAFT_MARGIN = 2  # a drafted JPEG keeps at least twice the target size on each side
_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def decode_for(data: bytes, rule: "Resize", policy: str | None = None, *, short_side: int | None = None,
               resolution: tuple[int, int] | None = None, max_pixels: int | None = None, draft: bool = True) -> np.ndarray:
    """Image bytes -> the model's input pixels: ``decode`` then ``prepare``, the size chosen from the file's
    own (oriented) size, a large JPEG drafted first (module docstring)."""
    source = _open(data, max_pixels)
    policy = policy or rule.policy
    if not source.is_jpeg:  # nothing to draft: sized from the decoded, turned pixels
        return prepare(_pixels(source), rule, policy, short_side=short_side, resolution=resolution)
    turned = source.orientation in _TURNED
    oh, ow = (source.width, source.height) if turned else (source.height, source.width)
    size = rule.target(oh, ow, policy, short_side=short_side, resolution=resolution)
    scale, want = 1, None
    if draft:
        th, tw = (size[1], size[0]) if turned else size
        want = (DRAFT_MARGIN * tw, DRAFT_MARGIN * th)
        scale = jpeg.draft_scale(source.width, source.height, *want)
    array = _pixels(source, scale, want)
    if policy == "center_square":
        array = center_square(array)
    return resize(array, size)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: decoding applies no turn either
        return 1


# -- sizing -----------------------------------------------------------------------------
def center_square(array: np.ndarray) -> np.ndarray:
    """The centred square crop of ``[H, W, 3]`` (side = the shorter side)."""
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[top:top + side, left:left + side]


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize RGB ``[H, W, 3]`` to ``size`` (h, w), bicubic and antialiased; a no-op when already there."""
    if array.shape[:2] == tuple(size):
        return np.ascontiguousarray(array)
    image = Image.fromarray(np.ascontiguousarray(array), "RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def prepare(array: np.ndarray, rule: Resize, policy: str | None = None, *, short_side: int | None = None,
            resolution: tuple[int, int] | None = None) -> np.ndarray:
    """Decoded RGB pixels -> the model's input pixels under ``policy`` (default: the rule's own)."""
    policy = policy or rule.policy
    size = rule.target(array.shape[0], array.shape[1], policy, short_side=short_side, resolution=resolution)
    if policy == "center_square":
        array = center_square(array)
    return resize(array, size)


def load(path: str | PathLike, rule: Resize, policy: str | None = None, **kwargs) -> np.ndarray:
    """An image file -> the model's input pixels (read, then ``decode_for``); errors name the file."""
    data = _read(path)
    try:
        return decode_for(data, rule, policy, **kwargs)
    except ImageError as exc:
        raise type(exc)(f"image {path}: {exc}") from None


def normalise(array: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]``, ``(x / 255 - mean) / std``: what the graph does inside."""
    x = np.asarray(array, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (x - mean) / std
