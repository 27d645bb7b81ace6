"""Normalise official-layout state dicts and fold SINDER's SVD parametrisation back into weights."""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError
from ._keys import name_keys

# DINOv2 training uses `block_chunks` for FSDP: `blocks.<chunk>.<index>.` where <index> is global.
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")


def unchunk(sd: dict) -> dict:
    """``blocks.<chunk>.<i>.x`` -> ``blocks.<i>.x`` (the index is already global in chunked models)."""
    out = {}
    for k, v in sd.items():
        m = _CHUNKED.match(k)
        out[f"blocks.{m.group(1)}.{m.group(2)}" if m else k] = v
    return out


def _svd_weight(sd: dict, base: str, suffix: str = "") -> torch.Tensor:
    parts = [f"{base}.{p}{suffix}" for p in ("U", "S", "Vt", "epsilon")]
    missing = [p for p in parts if p not in sd]
    if missing:
        raise CheckpointError(f"SINDER SVD state dict: missing {name_keys(missing)}")
    u, s, vt, eps = (sd[p].float() for p in parts)
    if u.shape[1] != s.shape[0] or vt.shape[0] != s.shape[0] or eps.shape != s.shape:
        raise CheckpointError(f"SINDER SVD state dict: inconsistent shapes under {base} (U {tuple(u.shape)}, "
                              f"S {tuple(s.shape)}, Vt {tuple(vt.shape)}, epsilon {tuple(eps.shape)})")
    return (u * (s + eps)) @ vt


def fold_svd(sd: dict) -> dict:
    """Replace every ``U, S, Vt, epsilon`` group by ``weight = U diag(S + epsilon) Vt``."""
    out: dict = {}
    bases: set[tuple[str, bool]] = set()
    for k, v in sd.items():
        m = re.match(r"^(.*)\.(U|S|Vt|epsilon)(_[qkv])?$", k)
        if m:
            bases.add((m.group(1), m.group(3) is not None))
        else:
            out[k] = v
    for base, split_qkv in sorted(bases):
        if split_qkv:
            out[f"{base}.weight"] = torch.cat([_svd_weight(sd, base, f"_{p}") for p in "qkv"], dim=0)
        else:
            out[f"{base}.weight"] = _svd_weight(sd, base)
    return out
