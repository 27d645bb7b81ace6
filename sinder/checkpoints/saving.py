"""Write an official-layout checkpoint that the original DINOv2 code loads with ``strict=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..atomic import write_with
from ..errors import CheckpointError
from ..model import LoadedModel
from .convert import to_official
from .formats import detect_format


def plain_state_dict(model_or_sd) -> dict[str, torch.Tensor]:
    if isinstance(model_or_sd, LoadedModel):
        model_or_sd = model_or_sd.model
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    if not isinstance(sd, dict):
        raise CheckpointError(f"cannot save a {type(model_or_sd).__name__} as a checkpoint")
    # Plain, contiguous CPU tensors: no Parameter subclasses or views into larger storages.
    return {str(k): v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_official(model_or_sd, path: str | Path) -> Path:
    """Save a model (or a state dict of any supported layout) in the official layout, atomically."""
    sd = plain_state_dict(model_or_sd)
    sd = to_official(sd, detect_format(sd))
    path = Path(path)
    write_with(path, lambda tmp: torch.save(sd, tmp))
    return path
