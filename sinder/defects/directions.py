"""Predicted singular defect directions: the leading left singular vector of the product of
the linearised blocks from the first block up to each layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .linearize import block_map, sampled_ffn_fit


def _vit(model):
    # Accept a LoadedModel as well as the bare DinoVisionTransformer.
    return getattr(model, "model", model)


def block_maps(model, n_samples: int = 0, seed: int = 0) -> list[torch.Tensor]:
    """One ``[C, C]`` float64 linear stand-in per block (see ``linearize``).

    ``n_samples = 0`` uses the closed-form least-squares fit of the FFN; ``n_samples > 0`` fits
    on that many standard-normal samples drawn from ``seed``, as the reference code does.
    """
    vit = _vit(model)
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    gen = torch.Generator().manual_seed(seed)
    maps = []
    with torch.no_grad():
        for blk in vit.blocks:
            fit = sampled_ffn_fit(blk.mlp, n_samples, gen) if n_samples else None
            maps.append(block_map(blk, fit))
    return maps


def fix_sign(v: torch.Tensor) -> torch.Tensor:
    """Flip ``v`` so that its largest-magnitude component is positive (ties: the first)."""
    i = int(torch.argmax(v.abs()))
    return -v if v[i] < 0 else v


def leading_left_singular(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u1, singular values) of ``m``."""
    u, s, _ = torch.linalg.svd(m)
    return u[:, 0], s


def cumulative_spectra(model, n_samples: int = 0, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (unit direction with fixed sign, singular values) of the cumulative block product."""
    out = []
    prod = None
    for m in block_maps(model, n_samples, seed):
        prod = m if prod is None else m @ prod
        # Rescaling does not move singular vectors; it keeps deep products finite.
        prod = prod / prod.norm()
        u, s = leading_left_singular(prod)
        out.append((fix_sign(u), s))
    return out


@dataclass(frozen=True)
class Directions:
    """The predicted directions of one model: computed once, then handed to every job that needs them.

    ``vectors`` ``[depth, C]`` float32 unit vectors on the CPU (signs fixed, see :func:`fix_sign`);
    ``spectra`` the singular values of each cumulative block product.
    """

    vectors: torch.Tensor
    spectra: tuple[torch.Tensor, ...]

    @property
    def last(self) -> torch.Tensor:
        return self.vectors[-1]

    def summary(self, top_channels: int = 5) -> list[dict]:
        """Per layer: the direction, how dominant it is (s1/s2) and its largest channels."""
        rows = []
        for i, (u, s) in enumerate(zip(self.vectors, self.spectra)):
            order = torch.argsort(u.abs(), descending=True)[:top_channels]
            rows.append({
                "index": i,
                "singular_value_ratio": float(s[0] / s[1]) if s.numel() > 1 and s[1] > 0 else None,
                "top_channels": [{"channel": int(c), "value": float(u[c])} for c in order],
                "direction": [float(x) for x in u],
            })
        return rows


def predict_directions(model, n_samples: int = 0, seed: int = 0) -> Directions:
    """The predicted singular defect direction after each block of ``model`` (computed where its weights are)."""
    pairs = cumulative_spectra(model, n_samples, seed)
    return Directions(vectors=torch.stack([u for u, _ in pairs]).float().cpu(),
                      spectra=tuple(s.cpu() for _, s in pairs))


def directions_of(loaded) -> Directions:
    """``loaded``'s directions (closed-form fit), computed on first need and kept on the ``LoadedModel``,
    so that every step of a job (export, analysis, repair) uses one computation per model."""
    if loaded.directions is None:
        loaded.directions = predict_directions(loaded.model)
    return loaded.directions


def defect_directions(model, n_samples: int = 0, seed: int = 0) -> torch.Tensor:
    """``[depth, C]`` unit vectors: the predicted singular defect direction after each block.

    ``model`` is a ``DinoVisionTransformer`` (or a ``LoadedModel``). Directions are float32 on
    the CPU; each sign is fixed so that its largest-magnitude component is positive.
    """
    return predict_directions(model, n_samples, seed).vectors


def directions_summary(model, n_samples: int = 0, seed: int = 0, top_channels: int = 5) -> list[dict]:
    """Per layer: the direction, how dominant it is (s1/s2) and its largest channels."""
    return predict_directions(model, n_samples, seed).summary(top_channels)
