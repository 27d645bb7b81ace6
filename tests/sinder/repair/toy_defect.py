"""A tiny DINOv2 with a planted singular defect, small enough for unit tests.

Like the demo model, but position-driven so that it needs no natural images: a private
detector channel ``P`` is high at a few interior grid positions, and an FFN unit of block
``DEFECT_BLOCK`` reads only ``P`` and writes a large value into a private channel ``D``
that no other weight touches. Tokens at those positions become high-norm and aligned with
``D`` from that block on.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sinder.model import ArchConfig, LoadedModel, build_model

GRID = 8
TOY_ARCH = ArchConfig("toy", embed_dim=32, depth=4, num_heads=2, img_size=14 * GRID, layerscale_init=0.3)
P, D = 3, 17
DEFECT_BLOCK = 1
DEFECT_CELLS = [(2, 2), (3, 5), (5, 3)]  # interior cells: 3 of 64 tokens


def make_toy_model(seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = build_model(TOY_ARCH)
    c = TOY_ARCH.embed_dim
    ordinary = torch.ones(c)
    ordinary[[P, D]] = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.1, 0.5, generator=g)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 or name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.patch_embed.proj.weight[[P, D]] = 0
        model.patch_embed.proj.bias[[P, D]] = 0
        model.cls_token[..., [P, D]] = 0
        pos = model.pos_embed
        pos[..., [P, D]] = 0
        pos[0, 1:, P] = -1.0
        for r, col in DEFECT_CELLS:
            pos[0, 1 + r * GRID + col, P] = 8.0
        for i, blk in enumerate(model.blocks):
            blk.attn.qkv.weight.mul_(ordinary[None, :])
            blk.attn.proj.weight.mul_(ordinary[:, None])
            blk.attn.proj.bias.mul_(ordinary)
            blk.mlp.fc1.weight.mul_(ordinary[None, :])
            blk.mlp.fc2.weight.mul_(ordinary[:, None])
            blk.mlp.fc2.bias.mul_(ordinary)
            if i == DEFECT_BLOCK:
                blk.norm2.weight[P] = 1.0
                blk.norm2.bias[P] = 0.0
                unit = 0
                blk.mlp.fc1.weight[unit] = 0
                blk.mlp.fc1.weight[unit, P] = 6.0
                blk.mlp.fc1.bias[unit] = -8.0  # fires only where P is high (about 3 after LayerNorm)
                blk.mlp.fc2.weight[:, unit] = 0
                blk.mlp.fc2.weight[D, unit] = 40.0
                blk.ls2.gamma[D] = 0.5
    return model.eval()


def toy_loaded(seed: int = 0) -> LoadedModel:
    return LoadedModel(model=make_toy_model(seed), arch=TOY_ARCH, source=f"toy:seed={seed}",
                       source_format="official", sha256=f"toy-{seed}", synthetic=True)


def write_images(folder, n: int, seed: int = 0, size=(112, 112)) -> list:
    """Noise photos at the toy's native 112 px (8 x 8 patches, where its defect cells are), so
    that no resampling blurs them. The 40-iteration toy repair is sensitive to the noise it
    trains on: other sizes (and, before this, main's own code at 124 x 120) leave one token of
    the six."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths
