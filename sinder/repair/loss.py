"""The neighbour loss of SINDER: pull each defective token toward its non-defective neighbours.

Follows the reference code (haoqiwang/sinder ``neighbor_loss.py``): on the ``H×W`` grid of a
layer's patch tokens, a token is defective when its |cosine| to the layer's singular defect
direction exceeds mean + ``mask_thr``·std of the grid's |cosines| (border tokens excluded,
they lack a full neighbourhood). Its target is a ``k×k`` average of its neighbourhood whose
weights are a Gaussian times ``exp(-|cos|/0.1)`` (renormalised), so defect-aligned neighbours,
the token itself included, barely count. The loss is the mean distance of the defective
tokens to their targets divided by the mean norm of the interior tokens; targets and
the normaliser carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..defects import rule
from .options import KERNELS, TEMPERATURE

_GAUSSIANS = {
    3: torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16,
    5: torch.tensor(
        [
            [1.0, 4.0, 7.0, 4.0, 1.0],
            [4.0, 16.0, 26.0, 16.0, 4.0],
            [7.0, 26.0, 41.0, 26.0, 7.0],
            [4.0, 16.0, 26.0, 16.0, 4.0],
            [1.0, 4.0, 7.0, 4.0, 1.0],
        ]
    )
    / 273,
}


@dataclass
class NeighbourLoss:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the tokens
    rows: torch.Tensor  # grid rows of the defective tokens
    cols: torch.Tensor
    mask: torch.Tensor  # [H, W] bool
    alpha: torch.Tensor  # mean interior token norm (the normaliser)

    @property
    def count(self) -> int:
        return int(self.rows.numel())


def _check_kernel(kernel: int) -> int:
    if kernel not in _GAUSSIANS:
        raise ValueError(f"kernel must be one of {KERNELS} (the reference code's Gaussians), got {kernel}")
    return kernel // 2


def defect_grid_mask(alignment: torch.Tensor, mask_thr: float, kernel: int) -> torch.Tensor:
    """The contract's mask on an ``[H, W]`` grid of |cosines| (statistics over the whole grid), borders cleared."""
    pad = _check_kernel(kernel)
    mask = rule.defect_mask(alignment, mask_thr)
    if pad:
        mask[:pad, :] = False
        mask[-pad:, :] = False
        mask[:, :pad] = False
        mask[:, -pad:] = False
    return mask


def neighbour_targets(
    tokens: torch.Tensor,
    alignment: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    kernel: int,
    temperature: float = TEMPERATURE,
) -> torch.Tensor:
    """``[M, C]`` targets of the interior tokens at (``rows``, ``cols``): the defect-suppressing
    Gaussian average of each one's ``k×k`` window (the reference computes it for every token
    and indexes; only the defective tokens' windows are gathered here)."""
    pad = _check_kernel(kernel)
    offsets = torch.arange(-pad, pad + 1, device=tokens.device)
    rr = rows[:, None, None] + offsets[None, :, None]  # [M, k, 1]
    cc = cols[:, None, None] + offsets[None, None, :]  # [M, 1, k]
    w = torch.exp(-alignment[rr, cc] / temperature) * _GAUSSIANS[kernel].to(alignment)
    w = w / w.sum(dim=(-1, -2), keepdim=True)
    return (tokens[rr, cc] * w[..., None]).sum(dim=(1, 2))


def neighbour_loss(
    tokens: torch.Tensor,
    direction: torch.Tensor,
    mask_thr: float = rule.THRESHOLD_STD,
    kernel: int = 3,
    temperature: float = TEMPERATURE,
) -> NeighbourLoss | None:
    """The loss for one image's patch tokens ``[H, W, C]`` at one layer; ``None`` when no token is defective."""
    if tokens.dim() != 3:
        raise ValueError(f"expected patch tokens shaped [H, W, C], got {tuple(tokens.shape)}")
    pad = _check_kernel(kernel)
    h, w = tokens.shape[:2]
    if h <= 2 * pad or w <= 2 * pad:
        return None  # no interior token has a full neighbourhood
    with torch.no_grad():
        alignment = rule.token_alignment(tokens.detach(), direction.to(tokens))
        mask = defect_grid_mask(alignment, mask_thr, kernel)
        index = torch.nonzero(mask.flatten()).flatten()
        if index.numel() == 0:
            return None
        rows, cols = index // w, index % w
        targets = neighbour_targets(tokens.detach(), alignment, rows, cols, kernel, temperature)
        alpha = tokens.detach()[pad : h - pad, pad : w - pad].norm(dim=-1).mean()
    dist = (tokens[rows, cols] - targets).norm(dim=-1)
    return NeighbourLoss(loss=dist.mean() / alpha, rows=rows, cols=cols, mask=mask, alpha=alpha)
