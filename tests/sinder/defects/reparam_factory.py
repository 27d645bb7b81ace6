"""A functionally identical re-parametrisation of a DINOv2 state dict: every LayerNorm's affine
folded into the weights that read it, every LayerScale into the weights that write through it,
then an orthogonal change of basis ``Q`` of the residual stream with ``Q 1 = 1`` (so that
LayerNorm commutes with it). Every block's output is ``Q`` times the original's, so the model
has exactly the same high-norm tokens; only its parametrisation differs."""

from __future__ import annotations

import torch


def rotation_keeping_ones(c: int, seed: int = 0) -> torch.Tensor:
    """A random orthogonal ``[c, c]`` matrix with ``Q @ 1 = 1`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(c, 1, dtype=torch.float64) / c**0.5
    basis = torch.linalg.qr(torch.cat([ones, torch.randn(c, c - 1, generator=g, dtype=torch.float64)], dim=1))[0]
    u = basis[:, 1:]  # orthonormal basis of the complement of 1
    r = torch.linalg.qr(torch.randn(c - 1, c - 1, generator=g, dtype=torch.float64))[0]
    return ones @ ones.T + u @ r @ u.T


def reparametrise(state: dict[str, torch.Tensor], depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    s = {k: v.double().clone() for k, v in state.items()}
    c = s["cls_token"].shape[-1]
    q = rotation_keeping_ones(c, seed)

    def fold_norm(norm: str, linear: str) -> None:
        gamma, beta = s.pop(f"{norm}.weight"), s.pop(f"{norm}.bias")
        w = s[f"{linear}.weight"]
        s[f"{linear}.bias"] = s[f"{linear}.bias"] + w @ beta
        s[f"{linear}.weight"] = (w * gamma[None, :]) @ q.T
        s[f"{norm}.weight"], s[f"{norm}.bias"] = torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)

    def fold_scale(scale: str, linear: str) -> None:
        gamma = s[f"{scale}.gamma"]
        s[f"{linear}.weight"] = q @ (gamma[:, None] * s[f"{linear}.weight"])
        s[f"{linear}.bias"] = q @ (gamma * s[f"{linear}.bias"])
        s[f"{scale}.gamma"] = torch.ones(c, dtype=torch.float64)

    for i in range(depth):
        b = f"blocks.{i}"
        fold_norm(f"{b}.norm1", f"{b}.attn.qkv")
        fold_norm(f"{b}.norm2", f"{b}.mlp.fc1")
        fold_scale(f"{b}.ls1", f"{b}.attn.proj")
        fold_scale(f"{b}.ls2", f"{b}.mlp.fc2")
    for key in ("cls_token", "pos_embed", "mask_token"):
        s[key] = s[key] @ q.T
    w = s["patch_embed.proj.weight"]
    s["patch_embed.proj.weight"] = torch.einsum("oc,c...->o...", q, w)
    s["patch_embed.proj.bias"] = q @ s["patch_embed.proj.bias"]
    return {k: v.float() for k, v in s.items()}, q


def reparametrised_demo(seed: int = 0):
    """The planted demo re-parametrised: ``(LoadedModel, Q)``; its block outputs are ``Q`` times the demo's."""
    from sinder.demo import load_demo
    from sinder.model import LoadedModel, build_model

    planted = load_demo(0)
    state, q = reparametrise(planted.model.state_dict(), planted.arch.depth, seed)
    model = build_model(planted.arch)
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model=model, arch=planted.arch, source="reparametrised planted demo", source_format="demo",
                       sha256="0" * 64, synthetic=True), q
