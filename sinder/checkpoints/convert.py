"""Any supported layout -> the official layout."""

from __future__ import annotations

from ..errors import CheckpointError
from .formats import FORMATS
from .hf import hf_to_official
from .official import fold_svd, unchunk


def to_official(sd: dict, fmt: str) -> dict:
    """A new state dict in the facebookresearch/dinov2 layout (``blocks.N.attn.qkv.weight``...)."""
    if fmt == "official":
        return unchunk(sd)
    if fmt == "sinder":
        return fold_svd(unchunk(sd))
    if fmt == "hf":
        return hf_to_official(sd)
    raise CheckpointError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}")


def default_interpolation(fmt: str, num_register_tokens: int) -> str:
    """The position-embedding interpolation of the code that produced a checkpoint of this origin.

    The official ``*_reg`` models are built with ``interpolate_antialias=True, interpolate_offset=0``
    and transformers' ``Dinov2WithRegistersModel`` matches them, so any checkpoint with register
    tokens defaults to ``antialias``. Without registers the official code uses the 0.1 offset, HF's
    ``Dinov2Model`` ``size=``, and the SINDER reference code the offset with antialias switched on.
    """
    if num_register_tokens:
        return "antialias"
    return {"official": "official", "hf": "hf", "sinder": "official_antialias"}.get(fmt, "official")
