import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sinder.errors import ImageError
from sinder.images import (
    DEMO_PHOTOS,
    demo_images_dir,
    denormalize,
    list_images,
    load_image,
    split_images,
)
from sinder.model.archs import IMAGENET_MEAN, IMAGENET_STD


def _save(path: Path, size=(60, 40), mode="RGB", color=(255, 255, 255)):
    Image.new(mode, size, color).save(path)
    return path


def test_list_images_sorted_skips_hidden_and_non_images(tmp_path):
    _save(tmp_path / "b.png")
    _save(tmp_path / "a.JPG")
    _save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no_images"])
def test_list_images_errors_name_the_folder(tmp_path, case):
    folder = tmp_path / "imgs"
    if case == "file":
        folder.write_text("x")
    elif case == "empty":
        folder.mkdir()
    elif case == "no_images":
        folder.mkdir()
        (folder / "a.txt").write_text("x")
    with pytest.raises(ImageError, match="imgs"):
        list_images(folder)


@pytest.mark.parametrize("size,expected", [((60, 40), (224, 336)), ((40, 60), (336, 224)), ((50, 50), (224, 224))])
def test_load_image_shorter_side_and_patch_multiples(tmp_path, size, expected):
    x = load_image(_save(tmp_path / "i.png", size=size), resolution=224)
    assert x.shape == (3, *expected)
    assert x.dtype == torch.float32


def test_load_image_rounds_to_the_nearest_patch_multiple_as_the_service_does(tmp_path):
    x = load_image(_save(tmp_path / "i.png", size=(100, 100)), resolution=236)
    assert x.shape == (3, 238, 238)  # 236 / 14 = 16.9 -> 17 patches (contract.preprocess.Resize)


def test_load_image_normalises_with_imagenet_stats(tmp_path):
    x = load_image(_save(tmp_path / "white.png", color=(255, 255, 255)), resolution=28)
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5)
    assert np.allclose(denormalize(x), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode,color", [("L", 128), ("RGBA", (10, 20, 30, 128)), ("P", 3), ("I;16", 3000),
                                        ("CMYK", (0, 0, 0, 0)), ("F", 0.5), ("1", 1)])
def test_load_image_any_mode_gives_three_channels(tmp_path, mode, color):
    path = tmp_path / ("i.tif" if mode in ("I;16", "CMYK", "F") else "i.png")
    Image.new(mode, (30, 30), color).save(path)
    assert load_image(path, resolution=28).shape == (3, 28, 28)


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.new("RGB", (60, 30), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 30, 30))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "r.jpg"
    im.save(path, exif=exif.tobytes())
    x = load_image(path, resolution=28)
    assert x.shape == (3, 56, 28)  # portrait once rotated
    top, bottom = denormalize(x)[:20].mean(), denormalize(x)[-20:].mean()
    assert top > 0.8 and bottom < 0.2  # the white half ends up on top


def test_load_image_bad_files_name_the_file(tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(ImageError, match="fake.png"):
        load_image(fake)
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (1, 2, 3)).save(buf, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(truncated)
    with pytest.raises(ImageError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_demo_images_dir_writes_bundled_photos_once(tmp_path):
    dest = tmp_path / "demo"
    assert demo_images_dir(dest) == dest
    names = sorted(p.name for p in list_images(dest))
    assert names == sorted(DEMO_PHOTOS)
    stamp = (dest / DEMO_PHOTOS[0]).stat().st_mtime_ns
    assert demo_images_dir(dest) == dest
    assert (dest / DEMO_PHOTOS[0]).stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    x = load_image(dest / "astronaut.png")
    assert x.shape == (3, 224, 224)


def test_split_images_deterministic_disjoint_and_complete():
    paths = [Path(f"/x/{i:02d}.png") for i in range(14)]
    train, held = split_images(paths, 0.25, seed=3)
    assert (train, held) == split_images(list(reversed(paths)), 0.25, seed=3)
    assert set(train).isdisjoint(held)
    assert sorted(train + held) == paths
    assert len(held) == round(14 * 0.25)
    assert split_images(paths, 0.25, seed=4) != (train, held)


def test_split_images_edge_cases():
    two = [Path("a.png"), Path("b.png")]
    train, held = split_images(two, 0.9)
    assert len(train) == 1 and len(held) == 1
    assert split_images(two, 0.0) == (two, [])
    with pytest.raises(ImageError):
        split_images(two, 1.0)


def test_default_demo_dir_follows_the_environment(monkeypatch, tmp_path):
    from sinder.images import default_demo_dir

    monkeypatch.setenv("SINDER_CACHE", str(tmp_path / "c"))
    assert default_demo_dir() == tmp_path / "c" / "demo_images"
    monkeypatch.delenv("SINDER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_demo_dir() == tmp_path / "x" / "sinder" / "demo_images"
