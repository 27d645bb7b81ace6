"""Training images for a repair at scale: listed from a folder or a text file, streamed through a
``DataLoader`` (decoding, resizing and cropping in worker processes), never all held in memory.

The order is a pure function of (seed, epoch), so a position in the stream fixes where a
resumed run continues. An unreadable image is not an error by itself: the stream yields it as
``(index, None, message)`` and the trainer skips it with a warning and counts it; the run
fails only once every training image has proved unreadable (or at the first with ``strict``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ImageError


def pillow_suffixes() -> set[str]:
    """Every file suffix a Pillow image plugin claims (jpeg, png, webp, tiff, ...)."""
    from PIL import Image

    Image.init()
    return {s.lower() for s in Image.registered_extensions()}


def collect_images(source: str | os.PathLike) -> list[Path]:
    """The images of ``source``: a folder (recursively; hidden files and folders skipped) or a
    text file with one path per line (relative paths from the file's folder; ``#`` comments)."""
    source = Path(source)
    if not source.exists():
        raise ImageError(f"image folder {source} does not exist")
    if source.is_file():
        return _from_list(source)
    suffixes = pillow_suffixes()
    paths = []
    for root, dirs, files in os.walk(source, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [Path(root) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    if not paths:
        raise ImageError(f"image folder {source} holds no images (searched recursively for the formats Pillow reads)")
    return sorted(paths)


def _from_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"cannot read the image list {path}: {exc}") from None
    paths = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            paths.append(p if p.is_absolute() else path.parent / p)
    if not paths:
        raise ImageError(f"image list {path} names no images")
    return paths


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training images in ``epoch``: a permutation fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


TRAINING_POLICY = "center_square"  # the reference's training crop (contract/preprocess.py)


def load_train_image(path: Path, resolution: int) -> torch.Tensor:
    """The reference's training crop: the centre square, its side to ``resolution``, normalised."""
    from ..images import load_image

    return load_image(path, resolution, policy=TRAINING_POLICY)


def training_preprocessing(resolution: int) -> dict:
    """How the training images were prepared, for the report and the repaired model's manifest."""
    from ..images import image_rule

    return image_rule(resolution).model_copy(update={"policy": TRAINING_POLICY}).model_dump()


class TrainImages(Dataset):
    """Image ``index`` -> ``(index, tensor, None)``, or ``(index, None, message)`` when it cannot be read."""

    def __init__(self, paths: Sequence[Path], resolution: int, loader=load_train_image):
        self.paths, self.resolution, self.loader = list(paths), resolution, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.loader(self.paths[index], self.resolution), None
        except ImageError as exc:
            return index, None, str(exc)


class StreamOrder(Sampler):
    """Image indices from stream position ``start`` to ``stop``: epoch after epoch of :func:`epoch_order`."""

    def __init__(self, n: int, seed: int, start: int, stop: int):
        self.n, self.seed, self.start, self.stop = n, seed, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[int]:
        epoch, order = None, []
        for pos in range(self.start, self.stop):
            if pos // self.n != epoch:
                epoch = pos // self.n
                order = epoch_order(self.n, self.seed, epoch)
            yield order[pos % self.n]


def default_workers() -> int:
    """Decoding processes beside the training loop: all but one core, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def stream(dataset: TrainImages, seed: int, start: int, stop: int, workers: int, pin_memory: bool,
           worker_init_fn=None) -> DataLoader:
    """The training images from position ``start`` on, one per iteration, decoded ``workers`` at a time."""
    return DataLoader(dataset, batch_size=None, sampler=StreamOrder(len(dataset), seed, start, stop),
                      num_workers=workers, pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                      worker_init_fn=worker_init_fn if workers else None, collate_fn=_keep)


def _keep(item):
    return item
