"""Recover the architecture from an official-layout state dict, and check a state dict against one."""

from __future__ import annotations

import math
import re

import torch

from ..errors import CheckpointError
from ..model import ARCHS, ArchConfig, DinoVisionTransformer
from ._keys import name_keys, shape_of

HEAD_DIM = 64  # every released DINOv2 model uses 64-dimensional heads
_REQUIRED = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight")
# Fields that shapes determine; the others (interpolation, layerscale init) do not show in weights.
_SHAPE_FIELDS = ("embed_dim", "depth", "num_heads", "ffn", "ffn_hidden", "num_register_tokens", "patch_size", "img_size")


def guess_num_heads(embed_dim: int) -> int:
    """64-dimensional heads where the width allows; otherwise the fewest heads of at most 64 dimensions.

    Head count does not show in the weights, so non-DINOv2 widths are a guess: pass an
    ``ArchConfig`` (or a folder with a transformers ``config.json``) to be exact.
    """
    if embed_dim % HEAD_DIM == 0:
        return embed_dim // HEAD_DIM
    heads = max(1, math.ceil(embed_dim / HEAD_DIM))
    while embed_dim % heads:
        heads += 1
    return heads


def _mlp_ratio_for(embed_dim: int, ffn: str, hidden: int) -> float:
    """An ``mlp_ratio`` that makes ``ArchConfig.ffn_hidden`` equal ``hidden``."""
    base = ArchConfig("probe", embed_dim, 1, 1, ffn=ffn)
    candidates = [4.0, hidden / embed_dim]
    if ffn == "swiglu":
        candidates += [(hidden * 3 / 2 + d) / embed_dim for d in range(0, 13)]
    for ratio in candidates:
        if base.with_(mlp_ratio=ratio).ffn_hidden == hidden:
            return ratio
    raise CheckpointError(f"FFN width {hidden} cannot be expressed for a {ffn} FFN of width {embed_dim}")


def detect_arch(sd: dict, num_heads: int | None = None) -> ArchConfig:
    """The architecture of an official-layout state dict: a named entry of ``ARCHS`` when the
    shapes match one, else an ``ArchConfig`` named ``custom``."""
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise CheckpointError(f"not a DINOv2 state dict: missing {name_keys(missing)}")
    embed_dim = int(sd["cls_token"].shape[-1])
    proj = sd["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2] or proj.shape[0] != embed_dim:
        raise CheckpointError(f"patch_embed.proj.weight has shape {shape_of(proj)}; expected {embed_dim}x3xPxP")
    patch = int(proj.shape[-1])
    pos = sd["pos_embed"]
    n_pos = int(pos.shape[1]) - 1 if pos.ndim == 3 else -1
    grid = math.isqrt(max(n_pos, 0))
    if pos.ndim != 3 or grid * grid != n_pos or grid == 0 or pos.shape[-1] != embed_dim:
        raise CheckpointError(f"pos_embed has shape {shape_of(pos)}; expected 1x(1+M*M)x{embed_dim}")
    indices = {int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))}
    if not indices:
        raise CheckpointError("not a DINOv2 state dict: no blocks.N.* keys")
    depth = max(indices) + 1
    if len(indices) != depth:
        gaps = sorted(set(range(depth)) - indices)
        raise CheckpointError(f"blocks {gaps[:8]} are missing (found {len(indices)} of {depth})")
    if "blocks.0.mlp.w12.weight" in sd:
        ffn, hidden = "swiglu", int(sd["blocks.0.mlp.w12.weight"].shape[0]) // 2
    elif "blocks.0.mlp.fc1.weight" in sd:
        ffn, hidden = "mlp", int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    else:
        raise CheckpointError("blocks.0.mlp has neither fc1 (GELU MLP) nor w12 (SwiGLU) weights")
    regs = int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0
    cfg = ArchConfig(
        name="custom", embed_dim=embed_dim, depth=depth,
        num_heads=num_heads or guess_num_heads(embed_dim), ffn=ffn,
        mlp_ratio=_mlp_ratio_for(embed_dim, ffn, hidden), num_register_tokens=regs,
        patch_size=patch, img_size=grid * patch,
    )
    for name, known in ARCHS.items():
        if all(getattr(known, f) == getattr(cfg, f) for f in _SHAPE_FIELDS):
            return known
    return cfg


def expected_shapes(arch: ArchConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = DinoVisionTransformer(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_fits(sd: dict, arch: ArchConfig) -> None:
    """Raise a ``CheckpointError`` naming every missing, unexpected and mis-shaped key."""
    want = expected_shapes(arch)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    wrong = [f"{k} {shape_of(sd[k])} (expected {'x'.join(map(str, want[k]))})"
             for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing {name_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected {name_keys(unexpected)}")
    if wrong:
        parts.append(f"mis-shaped {name_keys(wrong, limit=4)}")
    raise CheckpointError(f"state dict does not fit architecture {arch.name!r}: " + "; ".join(parts))
