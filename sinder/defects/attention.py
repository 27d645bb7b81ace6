"""How much attention high-norm tokens receive: are they attention sinks that later blocks read?

Darcet et al. ("Vision Transformers Need Registers") find that the high-norm tokens of real ViTs
take a large share of the CLS token's attention in the last blocks. This measures that share,
block by block, on the model's own attention weights (recomputed from qkv; the forward pass uses
the fused kernel, which does not return them).
"""

from __future__ import annotations

import torch

from .measure import DEFAULT_NORM_FACTOR


def _attention_weights(block, x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, N]`` softmax attention of ``block`` on its input tokens ``x`` ``[B, N, C]``."""
    attn = block.attn
    b, n, c = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    return torch.softmax(q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5), dim=-1)


def cls_attention_to_high_norm(model, images: list[torch.Tensor], norm_factor: float = DEFAULT_NORM_FACTOR) -> list[dict]:
    """Per block: the share of the CLS token's attention (mean over heads, and the largest head) that
    goes to patch tokens whose norm at the block's input is at least ``norm_factor`` x that image's
    median patch-token norm, beside the share those tokens are of all tokens.

    Returns one row per block, pooled over ``images`` (each ``[3, H, W]``, normalised).
    """
    vit = getattr(model, "model", model)
    vit.eval()
    depth = len(vit.blocks)
    start = vit.num_prefix_tokens
    sums = [{"mean": 0.0, "max_head": 0.0, "token_share": 0.0, "images_with": 0} for _ in range(depth)]
    param = next(vit.parameters())
    with torch.no_grad():
        for img in images:
            x = vit.prepare_tokens(img[None].to(param.device, param.dtype))
            for i, blk in enumerate(vit.blocks):
                norms = x[0, start:].float().norm(dim=-1)
                high = norms >= norm_factor * norms.median()
                if high.any():
                    w = _attention_weights(blk, x)[0, :, 0, start:].float()  # [heads, patches]
                    share = w[:, high].sum(dim=-1)
                    sums[i]["mean"] += float(share.mean())
                    sums[i]["max_head"] += float(share.max())
                    sums[i]["token_share"] += float(high.float().mean())
                    sums[i]["images_with"] += 1
                x = blk(x)
    rows = []
    for i, s in enumerate(sums):
        k = s["images_with"]
        rows.append({
            "index": i,
            "images_with_high_norm_tokens": k,
            "cls_attention_share": s["mean"] / k if k else None,
            "cls_attention_share_max_head": s["max_head"] / k if k else None,
            "high_norm_token_share": s["token_share"] / k if k else None,
        })
    return rows
