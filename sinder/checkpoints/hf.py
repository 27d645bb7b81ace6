"""Hugging Face ``Dinov2Model`` <-> official DINOv2 key layout.

Two HF spellings exist: the one stored in Hub files (``attention.attention.query``,
``attention.output.dense``, ``mlp.weights_in``/``weights_out``), and the one transformers 5
uses in memory (``attention.q_proj``... ``attention.o_proj``, ``mlp.gate_proj``/``up_proj``/
``down_proj``), which it maps from the Hub names at load time. Both are read; the Hub
spelling is written, since that is what ``from_pretrained`` of any version accepts.
"""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError
from ..model import ArchConfig
from ._keys import name_keys

# Whole-key renames outside the blocks, HF -> official.
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# Per-block renames, HF (either spelling) -> official, for the parts that map one to one.
_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.w12",
    "mlp.weights_out": "mlp.w3",
    "mlp.down_proj": "mlp.w3",
}
_QKV = ({"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value"},
        {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj"})
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_PARAM = re.compile(r"^(.+?)(\.weight|\.bias|)$")


def hf_to_official(sd: dict) -> dict:
    out: dict = {}
    unknown: list[str] = []
    pending: dict[tuple[int, str], dict[str, torch.Tensor]] = {}  # (block, group) -> parts to concatenate
    for key, value in sd.items():
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        m = _LAYER.match(key)
        if not m:
            unknown.append(key)
            continue
        i, rest = int(m.group(1)), m.group(2)
        if rest in _BLOCK:  # layer_scale*.lambda1 carries no .weight/.bias suffix
            out[f"blocks.{i}.{_BLOCK[rest]}"] = value
            continue
        module, param = _PARAM.match(rest).groups()
        if module in _BLOCK:
            out[f"blocks.{i}.{_BLOCK[module]}{param}"] = value
            continue
        part = next((p for names in _QKV for p, n in names.items() if n == module), None)
        if part is not None:
            pending.setdefault((i, f"attn.qkv{param}"), {})[part] = value
        elif module in ("mlp.gate_proj", "mlp.up_proj"):
            pending.setdefault((i, f"mlp.w12{param}"), {})["g" if module.endswith("gate_proj") else "u"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"Hugging Face state dict: unexpected keys {name_keys(unknown)}")
    for (i, target), parts in sorted(pending.items()):
        order = "qkv" if target.startswith("attn.qkv") else "gu"
        missing = [p for p in order if p not in parts]
        if missing:
            what = {"q": "query", "k": "key", "v": "value", "g": "gate_proj", "u": "up_proj"}
            raise CheckpointError(f"Hugging Face state dict: encoder.layer.{i} lacks the "
                                  f"{', '.join(what[p] for p in missing)} part of {target}")
        out[f"blocks.{i}.{target}"] = torch.cat([parts[p] for p in order], dim=0)
    if "mask_token" not in out and "cls_token" in out:
        # Unused at inference; HF configs with use_mask_token=False omit it, the official model needs it.
        out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1], dtype=out["cls_token"].dtype)
    return out


def official_to_hf(sd: dict, arch: ArchConfig | None = None) -> dict:
    """Official layout -> Hugging Face Hub layout (``Dinov2Model`` or ``Dinov2WithRegistersModel``).

    With ``arch``, the state dict is first checked against it (missing or mis-shaped keys are named).
    """
    if arch is not None:
        from .arch import check_fits

        check_fits(sd, arch)
    top = {v: k for k, v in _TOP.items()}
    block = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense",
             "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.w12": "mlp.weights_in", "mlp.w3": "mlp.weights_out"}
    out: dict = {}
    unknown: list[str] = []
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
            continue
        m = re.match(r"^blocks\.(\d+)\.(.+)$", key)
        if not m:
            unknown.append(key)
            continue
        i, rest = m.groups()
        prefix = f"encoder.layer.{i}."
        if rest in block:
            out[prefix + block[rest]] = value
            continue
        module, param = _PARAM.match(rest).groups()
        if module == "attn.qkv":
            if value.shape[0] % 3:
                raise CheckpointError(f"{key}: first dimension {value.shape[0]} is not divisible by 3")
            for name, chunk in zip(_QKV[0].values(), value.chunk(3, dim=0)):
                out[f"{prefix}{name}{param}"] = chunk.clone()
        elif module in block:
            out[f"{prefix}{block[module]}{param}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"official state dict: unexpected keys {name_keys(unknown)}")
    return out


def hf_config(arch: ArchConfig) -> dict:
    """A transformers ``config.json`` for ``arch`` (the Hub layout written by :func:`official_to_hf`)."""
    regs = arch.num_register_tokens > 0
    mlp_ratio = arch.mlp_ratio
    return {
        "architectures": ["Dinov2WithRegistersModel" if regs else "Dinov2Model"],
        "model_type": "dinov2_with_registers" if regs else "dinov2",
        "hidden_size": arch.embed_dim,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.num_heads,
        "mlp_ratio": int(mlp_ratio) if float(mlp_ratio).is_integer() else mlp_ratio,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "image_size": arch.img_size,
        "patch_size": arch.patch_size,
        "num_channels": 3,
        "qkv_bias": True,
        "layerscale_value": 1.0,
        "use_swiglu_ffn": arch.ffn == "swiglu",
        **({"num_register_tokens": arch.num_register_tokens} if regs else {}),
    }
