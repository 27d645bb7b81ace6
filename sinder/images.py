"""Image folders in, normalised tensors out, and the demo photos that ship with scikit-image.

Decoding and resizing are the contract's (``contract/preprocess.py``), the same code the
service runs: the same photo gives the same pixels here and through ``POST /features``.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from contract import preprocess
from contract.errors import ContractError
from contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, Resize

from .atomic import atomic_dir
from .errors import ImageError
from .model.archs import PATCH_SIZE

IMAGE_SUFFIXES = preprocess.image_suffixes()

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


def image_rule(resolution: int = 224, patch_size: int = PATCH_SIZE) -> Resize:
    """The resize the tool uses at ``resolution``: the contract's, with the bounds an export
    gets by default, so that an image analysed at the exported model's ``short_side`` gets
    the pixels the service gives it."""
    if resolution < patch_size:
        raise ImageError(f"resolution {resolution} is smaller than the patch size {patch_size}")
    default = Resize()
    return Resize(short_side=resolution, multiple_of=patch_size, min_side=min(default.min_side, resolution),
                  max_side=max(default.max_side, resolution),
                  max_pixels=max(default.max_pixels, resolution * resolution))


def load_pixels(path: str | os.PathLike, resolution: int = 224, patch_size: int = PATCH_SIZE,
                policy: str = "keep_aspect") -> np.ndarray:
    """The model's input pixels (RGB uint8 ``[H, W, 3]``) for ``path``, prepared by the contract."""
    try:
        return preprocess.load(path, image_rule(resolution, patch_size), policy)
    except ContractError as exc:
        raise ImageError(str(exc)) from None


def check_readable(path: str | os.PathLike) -> None:
    """Decode ``path`` fully, so that a bad file fails now (``ImageError`` naming it)."""
    try:
        preprocess.decode_file(path)
    except ContractError as exc:
        raise ImageError(str(exc)) from None


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` -> float ``[3, H, W]`` normalised as the graph does (the contract's)."""
    return torch.from_numpy(preprocess.normalise(pixels))


def load_image(path: str | os.PathLike, resolution: int = 224, patch_size: int = PATCH_SIZE,
               policy: str = "keep_aspect") -> torch.Tensor:
    """``[3, H, W]`` float tensor, ImageNet-normalised; H and W are multiples of the patch size.

    ``keep_aspect``: the shorter side to ``resolution``, both sides rounded to the patch size
    (as the service does by default); ``center_square``: the repair's training crop.
    """
    return to_tensor(load_pixels(path, resolution, patch_size, policy))


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
