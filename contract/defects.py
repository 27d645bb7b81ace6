"""The defect rule, written once (numpy). The export graph and the repair loss use torch
forms of it (``sinder.defects.rule``) built from these constants and tested equal to it.

- Alignment: ``|cos(token, direction)|``; a token of zero norm counts as unaligned (0).
- The paper's mask (SINDER, Wang et al. 2024; the reference code's ``mask_thr``): a token
  is defective when its alignment exceeds ``mean + k * std`` of the alignments of the same
  image's patch tokens, ``k = THRESHOLD_STD``.
- The standard deviation is the *sample* one (Bessel's correction, ``ddof = 1``), as
  ``torch.Tensor.std`` in the reference code. An image with fewer than two tokens has no
  spread, and nothing is flagged.
- High norm: a token whose L2 norm is at least ``HIGH_NORM_FACTOR`` times a median norm
  (that image's own by default; ``sinder analyze`` pools the median over an image set).
"""

from __future__ import annotations

import numpy as np

THRESHOLD_STD = 4.0  # k of the paper's mask (reference code: mask_thr=4)
HIGH_NORM_FACTOR = 4.0  # f of the high-norm rule
STD_DDOF = 1  # sample standard deviation (Bessel), as torch.std in the reference code
NORM_EPS = 1e-12  # norms are clamped to this before dividing: a zero token has alignment 0

RULE = ("defect_mask = |cos(token, direction)| > mean + {k:g} * std of the image's |cos| "
        "(sample std, ddof=1; SINDER, mask_thr=4)")
HIGH_NORM_RULE = "high_norm = token norm >= {f:g} * median token norm"


def rule_text(threshold_std: float = THRESHOLD_STD) -> str:
    return RULE.format(k=threshold_std)


def unit(direction: np.ndarray) -> np.ndarray:
    """``direction`` scaled to unit length (float64); a zero or non-finite vector is refused."""
    d = np.asarray(direction, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(d))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the defect direction must be a finite, non-zero vector")
    return d / norm


def token_norms(tokens: np.ndarray) -> np.ndarray:
    """L2 norm of each token, ``[..., C]`` -> ``[...]``."""
    return np.linalg.norm(np.asarray(tokens, dtype=np.float64), axis=-1)


def alignment(tokens: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``|cos|`` of each token ``[..., C]`` with ``direction`` ``[C]`` -> ``[...]``."""
    tokens = np.asarray(tokens, dtype=np.float64)
    return np.abs(tokens @ unit(direction)) / np.maximum(token_norms(tokens), NORM_EPS)


def defect_mask(align: np.ndarray, threshold_std: float = THRESHOLD_STD) -> np.ndarray:
    """The paper's mask on one image's alignments (any shape: the statistics pool all of them)."""
    align = np.asarray(align, dtype=np.float64)
    if align.size < 2:
        return np.zeros(align.shape, dtype=bool)
    return align > align.mean() + threshold_std * align.std(ddof=STD_DDOF)


def high_norm_mask(norms: np.ndarray, factor: float = HIGH_NORM_FACTOR, median: float | None = None) -> np.ndarray:
    """Tokens whose norm is at least ``factor`` times ``median`` (default: these norms' own median)."""
    norms = np.asarray(norms, dtype=np.float64)
    if median is None:
        median = float(np.median(norms)) if norms.size else 0.0
    return norms >= factor * median


def diagnostics(tokens: np.ndarray, direction: np.ndarray,
                threshold_std: float = THRESHOLD_STD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(norms, alignment, mask) of one image's patch tokens ``[..., C]``, as the graph's
    ``token_norms``, ``defect_alignment`` and ``defect_mask`` outputs define them."""
    align = alignment(tokens, direction)
    return token_norms(tokens), align, defect_mask(align, threshold_std)
