"""Image folders in, normalised tensors out, and the demo photos that ship with scikit-image."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_dir
from .errors import ImageError
from .model.archs import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Natural photographs bundled inside the scikit-image wheel (no pooch download needed).
DEMO_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} is not a folder")
    paths = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise ImageError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def _target_size(width: int, height: int, resolution: int, patch: int) -> tuple[int, int, int, int]:
    """(resized w, h, cropped w, h): shorter side to ``resolution``, then both cropped down to patch multiples."""
    scale = resolution / min(width, height)
    rw, rh = max(patch, round(width * scale)), max(patch, round(height * scale))
    return rw, rh, rw // patch * patch, rh // patch * patch


def load_pil(path: str | os.PathLike) -> Image.Image:
    """Open an image fully (so truncated files fail here), EXIF orientation applied, as RGB."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                # Composite on white rather than dropping alpha, which leaves arbitrary colours behind.
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = np.asarray(im, dtype=np.float64)
                span = arr.max() - arr.min()
                arr = (arr - arr.min()) / span * 255 if span > 0 else np.zeros_like(arr)
                im = Image.fromarray(arr.astype(np.uint8))
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from None


def pil_to_tensor(im: Image.Image, resolution: int = 224, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """Resize (shorter side = ``resolution``, bicubic, aspect kept), center-crop each side down to
    a multiple of ``patch_size``, and normalise with the ImageNet mean and std."""
    if resolution < patch_size:
        raise ImageError(f"resolution {resolution} is smaller than the patch size {patch_size}")
    rw, rh, cw, ch = _target_size(im.width, im.height, resolution, patch_size)
    im = im.resize((rw, rh), Image.BICUBIC)
    left, top = (rw - cw) // 2, (rh - ch) // 2
    im = im.crop((left, top, left + cw, top + ch))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def load_image(path: str | os.PathLike, resolution: int = 224, patch_size: int = PATCH_SIZE) -> torch.Tensor:
    """``[3, H, W]`` float tensor, ImageNet-normalised; H and W are multiples of the patch size."""
    return pil_to_tensor(load_pil(path), resolution, patch_size)


def denormalize(x: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` normalised tensor back to an ``[H, W, 3]`` array in [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.detach().float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def default_demo_dir() -> Path:
    """``$SINDER_CACHE/demo_images``, else ``$XDG_CACHE_HOME/sinder/demo_images`` (``~/.cache`` by default)."""
    if os.environ.get("SINDER_CACHE"):
        return Path(os.environ["SINDER_CACHE"]) / "demo_images"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sinder" / "demo_images"


def demo_images_dir(dest: str | os.PathLike | None = None) -> Path:
    """A folder of the natural photos bundled with scikit-image, written once (atomically)."""
    dest = Path(dest) if dest is not None else default_demo_dir()
    if dest.is_dir() and all((dest / name).is_file() for name in DEMO_PHOTOS):
        return dest
    try:
        from skimage import data as skdata
    except ImportError:  # pragma: no cover - scikit-image is a dependency of the tool extra
        raise ImageError("the demo images need scikit-image (pip install scikit-image)") from None
    src = Path(skdata.data_dir)
    missing = [name for name in DEMO_PHOTOS if not (src / name).is_file()]
    if missing:
        raise ImageError(f"scikit-image at {src} lacks the bundled photos {', '.join(missing)}")
    try:
        with atomic_dir(dest, overwrite=True) as tmp:
            for name in DEMO_PHOTOS:
                shutil.copyfile(src / name, tmp / name)
    except FileExistsError:
        pass  # another process finished it first
    return dest


def split_images(paths: list[Path], held_out_fraction: float, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic (train, held-out) split; both sides non-empty when there are two or more images."""
    if not 0.0 <= held_out_fraction < 1.0:
        raise ImageError(f"held-out fraction must lie in [0, 1), got {held_out_fraction}")
    ordered = sorted(paths, key=lambda p: str(p))
    if held_out_fraction == 0 or len(ordered) < 2:
        return ordered, []
    n_held = min(len(ordered) - 1, max(1, round(len(ordered) * held_out_fraction)))
    shuffled = ordered[:]
    random.Random(seed).shuffle(shuffled)
    held = set(map(str, shuffled[:n_held]))
    return [p for p in ordered if str(p) not in held], [p for p in ordered if str(p) in held]
