"""Checkpoint path -> ready ``LoadedModel``: read, detect, convert, check, build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm import tqdm

from ..errors import CheckpointError, SinderError
from ..model import ArchConfig, LoadedModel, build_model, get_arch
from ..model.archs import INTERPOLATIONS
from .arch import check_fits, detect_arch
from .convert import default_interpolation, to_official
from .formats import detect_format
from .reading import read_state_dict, weights_file

_HASH_PROGRESS_BYTES = 256 << 20  # show a progress bar when hashing files above this size


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                     disable=size < _HASH_PROGRESS_BYTES, leave=False) as bar:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _hf_config(path: Path) -> dict:
    """The transformers ``config.json`` beside the weights, if any (it knows the head count)."""
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if not config.is_file():
        return {}
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and str(data.get("model_type", "")).startswith("dinov2") else {}


def _assign(cfg: ArchConfig, official: dict):
    """The model holding the checkpoint's own (memory-mapped) float32 tensors: built on the meta
    device and assigned, so that a large checkpoint is never in memory twice."""
    import torch

    with torch.device("meta"):
        model = build_model(cfg)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in official.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def _resolve_arch(arch: str | ArchConfig | None, sd: dict, num_heads: int | None) -> ArchConfig:
    if isinstance(arch, ArchConfig):
        return arch
    if arch is None:
        return detect_arch(sd, num_heads=num_heads)
    try:
        return get_arch(arch)
    except ValueError as exc:
        raise SinderError(str(exc)) from None


def load_model(path: str | Path, arch: str | ArchConfig | None = None,
               interpolation: str | None = None) -> LoadedModel:
    """Load a DINOv2 checkpoint (official, Hugging Face or SINDER; a file or a HF model folder).

    The architecture comes from the shapes unless ``arch`` names one; the interpolation
    follows the checkpoint's origin unless ``interpolation`` is given. Every problem is a
    ``CheckpointError`` (or ``SinderError`` for a bad option) with a one-line message naming
    the file and what is wrong with it.
    """
    path = Path(path)
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise SinderError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")
    sd = read_state_dict(path)
    try:
        fmt = detect_format(sd)
        official = to_official(sd, fmt)
        config = _hf_config(path) if fmt == "hf" else {}
        cfg = _resolve_arch(arch, official, config.get("num_attention_heads"))
        cfg = cfg.with_(interpolation=interpolation or default_interpolation(fmt, cfg.num_register_tokens))
        check_fits(official, cfg)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = _assign(cfg, official)
    # A folder is named by its weights file (a sharded model by its index file).
    digest = sha256_file(weights_file(path))
    return LoadedModel(model=model, arch=cfg, source=str(path), source_format=fmt, sha256=digest)
