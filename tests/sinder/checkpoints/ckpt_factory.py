"""Random official-layout state dicts of any architecture, for the checkpoint tests."""

import torch

from sinder.checkpoints.arch import expected_shapes
from sinder.model import ArchConfig, get_arch

TINY = get_arch("vits14").with_(name="custom", embed_dim=64, depth=2, num_heads=1)


def random_official(arch: ArchConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in expected_shapes(arch).items()}


def meta_official(arch: ArchConfig) -> dict[str, torch.Tensor]:
    """Shapes only: enough for detection, free even for a full-size ViT-g."""
    return {k: torch.empty(shape, device="meta") for k, shape in expected_shapes(arch).items()}
