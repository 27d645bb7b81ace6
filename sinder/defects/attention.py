"""How much attention high-norm tokens receive: are they attention sinks that later blocks read?

Darcet et al. ("Vision Transformers Need Registers") find that the high-norm tokens of real ViTs
take a large share of the CLS token's attention in the last blocks. This measures that share,
block by block, on the model's own attention weights (recomputed from qkv; the forward pass uses
the fused kernel, which does not return them).
"""

from __future__ import annotations

import torch

from . import rule
from .measure import DEFAULT_NORM_FACTOR

RULE = ("block i: share of the CLS token's attention (mean over heads; max_head: its largest head) "
        "that goes to the patch tokens whose norm at the block's input (layer i-1's output) is at least "
        "4x that image's median patch-token norm, averaged over the images that have such tokens, beside "
        "those tokens' share of the patch tokens; null where no image has any")


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
                high = rule.high_norm_mask(norms, norm_factor)
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


def after_first_defect(rows: list[dict], first_defect: int | None) -> dict | None:
    """What the blocks after ``first_defect`` (those reading its output and later ones) give the
    high-norm tokens, averaged over the blocks that saw any: ``cls_attention_share``,
    ``high_norm_token_share`` and their ``ratio`` (above 1: the CLS token reads them more than their
    number explains, as attention sinks do). None without a defect layer or a block after it that
    saw a high-norm token."""
    if first_defect is None:
        return None
    seen = [r for r in rows[first_defect + 1:] if r["cls_attention_share"] is not None]
    if not seen:
        return None
    share = sum(r["cls_attention_share"] for r in seen) / len(seen)
    tokens = sum(r["high_norm_token_share"] for r in seen) / len(seen)
    return {"blocks": [r["index"] for r in seen], "cls_attention_share": share,
            "high_norm_token_share": tokens, "ratio": share / tokens}


def cls_attention_report(model, images: list[torch.Tensor], first_defect: int | None) -> dict:
    """The ``cls_attention`` entry of ``sinder analyze``'s report: the rule, every block's row and
    the summary over the blocks after the first defect layer."""
    rows = cls_attention_to_high_norm(model, images)
    return {"rule": RULE, "blocks": rows, "after_first_defect": after_first_defect(rows, first_defect)}
