"""Tell the checkpoint layouts apart from their keys (timm ``checkpoint_filter_fn`` style)."""

from __future__ import annotations

import re

from ..errors import CheckpointError
from ._keys import name_keys

FORMATS = ("official", "hf", "sinder")

# SINDER's SVDLinearAddition / SVDLinearAdditionQKV modules (haoqiwang/sinder `sinder/repair.py`)
# store U, S, Vt and the trained epsilon in place of a Linear's weight.
_SVD_KEY = re.compile(r"^blocks\.(?:\d+\.)?\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:fc1|fc2|w12|w3))\."
                      r"(?:U|S|Vt|epsilon)(?:_[qkv])?$")


def detect_format(sd: dict) -> str:
    """``"official"`` (facebookresearch/dinov2, also what SINDER's ``model.pt`` holds), ``"hf"``
    (transformers ``Dinov2Model``/``Dinov2WithRegistersModel``, Hub or transformers-5 names) or
    ``"sinder"`` (SINDER's singular-value parametrisation, before ε is folded back)."""
    keys = [k for k in sd if isinstance(k, str)]
    if any(_SVD_KEY.match(k) for k in keys):
        return "sinder"
    if "patch_embed.proj.weight" in sd or any(k.startswith("blocks.") for k in keys):
        return "official"
    if "embeddings.patch_embeddings.projection.weight" in sd or any(k.startswith("encoder.layer.") for k in keys):
        return "hf"
    raise CheckpointError(
        f"unknown state-dict layout: neither official DINOv2 (patch_embed.proj.weight, blocks.N.*) nor "
        f"Hugging Face Dinov2Model (embeddings.*, encoder.layer.N.*); keys: {name_keys(keys)}")
