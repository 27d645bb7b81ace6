"""The contract's defect rule (``contract/defects.py``) in torch, for the export graph, the
measurements and the repair loss. Same constants, same formula, same sample standard
deviation; ``tests/sinder/defects/test_defect_rule.py`` checks them equal to the numpy
definition on the same tokens.
"""

from __future__ import annotations

import torch

from contract import defects as _rule

THRESHOLD_STD = _rule.THRESHOLD_STD
HIGH_NORM_FACTOR = _rule.HIGH_NORM_FACTOR
STD_DDOF = _rule.STD_DDOF
NORM_EPS = _rule.NORM_EPS


def unit(direction: torch.Tensor) -> torch.Tensor:
    d = direction.float().reshape(-1)
    return d / torch.linalg.vector_norm(d)


def token_alignment(tokens: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``|cos|`` of each token ``[..., C]`` with ``direction``; a zero token has alignment 0."""
    d = direction.to(tokens.dtype).reshape(-1)
    d = d / torch.linalg.vector_norm(d)
    return (tokens @ d).abs() / torch.linalg.vector_norm(tokens, dim=-1).clamp_min(NORM_EPS)


def defect_mask(align: torch.Tensor, threshold_std: float = THRESHOLD_STD, dim: int | None = None) -> torch.Tensor:
    """The paper's mask: ``align > mean + k * std`` over ``dim`` (all elements when None).

    With a single token the sample std is NaN and the comparison false: nothing is flagged,
    as in the contract. No shape test, so the function traces into an ONNX graph as it is.
    """
    if dim is None:
        return align > align.mean() + threshold_std * align.std(correction=STD_DDOF)
    mean = align.mean(dim=dim, keepdim=True)
    std = align.std(dim=dim, keepdim=True, correction=STD_DDOF)
    return align > mean + threshold_std * std


def high_norm_mask(norms: torch.Tensor, factor: float = HIGH_NORM_FACTOR,
                   median: float | torch.Tensor | None = None) -> torch.Tensor:
    """Norms at least ``factor`` times ``median`` (default: these norms' own median)."""
    if median is None:
        median = norms.median()
    return norms >= factor * float(median)


def diagnostics(patch: torch.Tensor, direction: torch.Tensor,
                threshold_std: float = THRESHOLD_STD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(norms, alignment, mask) of ``patch`` ``[B, N, C]``, the statistics taken per image (over N)."""
    patch = patch.float()
    norms = torch.linalg.vector_norm(patch, dim=-1)
    align = token_alignment(patch, direction.float())
    return norms, align, defect_mask(align, threshold_std, dim=1)
