"""Random but non-trivial DINOv2 weights for the model tests."""

import torch


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights: random matrices, LayerNorm affine near 1/0, LayerScale 0.1-1.

    With the tiny LayerScale of a fresh init the blocks would hardly change the tokens and
    a wrong block mapping could still pass.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("lambda1", "gamma")):
                p.copy_(0.1 + 0.9 * torch.rand(p.shape, generator=g))
            elif ("norm" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith(("position_embeddings", "pos_embed")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(("cls_token", "register_tokens")):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith(("patch_embeddings.projection.weight", "patch_embed.proj.weight")):
                p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5))
    return model
