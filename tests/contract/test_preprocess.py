"""Image preprocessing (contract/preprocess.py): one RGB rule for every mode, one resize for both halves."""

import io

import numpy as np
import pytest
from PIL import Image

from contract import preprocess as pre
from contract.errors import ImageError, ImageTooLarge, ResizeError

RULE = pre.Resize(short_side=224, multiple_of=14, min_side=56, max_side=1036, max_pixels=1036 * 1036)


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_sixteen_bit_grey_maps_its_range_onto_eight_bits_pixel_by_pixel():
    grey = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    rgb = pre.decode(encode(Image.fromarray(grey)))
    assert rgb.shape == (1, 4, 3) and rgb[0, :, 0].tolist() == [0, 100, 255, 4]
    # the rule depends on the pixel only: a crop keeps its values
    assert pre.decode(encode(Image.fromarray(grey[:, 1:2])))[0, 0, 0] == 100


def test_float_grey_in_unit_range_is_scaled_and_nan_is_black():
    grey = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    rgb = pre.decode(encode(Image.fromarray(grey, "F"), "TIFF"))
    assert rgb[0, :, 1].tolist() == [0, 128, 255, 0]


def test_alpha_and_palette_transparency_are_composited_over_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert pre.decode(encode(rgba)).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    assert pre.decode(encode(pal, transparency=0)).tolist() == [[[255, 255, 255], [200, 0, 0]]]


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr", "LA", "I"])
def test_every_mode_becomes_rgb_uint8(mode):
    fmt = "TIFF" if mode in ("CMYK", "YCbCr", "I") else ("JPEG" if mode == "YCbCr" else "PNG")
    out = pre.decode(encode(Image.new(mode, (5, 3)), fmt))
    assert out.shape == (3, 5, 3) and out.dtype == np.uint8


def test_exif_orientation_and_first_frame():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    assert pre.decode(encode(image, "JPEG", exif=exif)).shape == (40, 20, 3)
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert pre.decode(gif)[0, 0].tolist() == [255, 0, 0]


def test_decode_errors():
    with pytest.raises(ImageError, match="empty"):
        pre.decode(b"")
    with pytest.raises(ImageError, match="not a recognised"):
        pre.decode(b"hello")
    with pytest.raises(ImageTooLarge, match="over the limit"):
        pre.decode(encode(Image.new("L", (100, 100))), max_pixels=99 * 100)


def test_center_square_is_the_training_crop():
    array = np.zeros((100, 160, 3), np.uint8)
    array[:, 30:130] = 255  # the centred 100x100 square is white
    out = pre.prepare(array, RULE, "center_square")
    assert out.shape == (224, 224, 3) and out.min() == 255
    assert RULE.target(100, 160, "center_square", short_side=112) == (112, 112)


def test_keep_aspect_native_and_stretch_sizes():
    assert RULE.target(300, 400) == (224, 294)  # 298.7 -> 21 patches
    assert RULE.target(300, 400, "native") == (294, 406)
    assert RULE.target(1, 1, "stretch", resolution=(56, 70)) == (56, 70)
    with pytest.raises(ResizeError, match="multiple of 14"):
        RULE.target(1, 1, "stretch", resolution=(56, 71))
    with pytest.raises(ResizeError, match="policy"):
        RULE.target(1, 1, "zoom")


def test_normalise_is_what_the_graph_does():
    pixels = np.array([[[0, 128, 255]]], np.uint8)
    x = pre.normalise(pixels)
    expected = (np.array([0, 128, 255]) / 255 - np.array(pre.IMAGENET_MEAN)) / np.array(pre.IMAGENET_STD)
    assert x.shape == (3, 1, 1) and x.dtype == np.float32 and np.allclose(x[:, 0, 0], expected, atol=1e-6)


def test_resize_bounds_are_validated():
    with pytest.raises(ValueError, match="min_side <= short_side"):
        pre.Resize(short_side=20, min_side=56)


def test_only_raster_image_formats_are_read_and_the_error_lists_them():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="accepted: JPEG, PNG"):
        pre.decode(eps)  # Pillow's EPS reader would hand the file to Ghostscript
    grey = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert pre.decode(encode(grey, "PPM")).shape == (3, 4, 3)
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".pgm", ".mpo"} <= set(pre.image_suffixes())
    assert ".eps" not in pre.image_suffixes()
