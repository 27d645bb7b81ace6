"""Position-embedding interpolation written as two small matrix products.

The reference implementations resample the 37x37 table differently off the native grid:

================== ============================================ =========================================
mode               call it reproduces                           used by
================== ============================================ =========================================
official           ``scale_factor=((h0 + 0.1) / M, ...)``        facebookresearch/dinov2 ViT-S/B/L/g
hf                 ``size=(h0, w0)``                             transformers ``Dinov2Model``
antialias          ``size=(h0, w0), antialias=True``             facebookresearch/dinov2 ``*_reg`` models,
                                                                transformers ``Dinov2WithRegistersModel``
official_antialias ``scale_factor=((h0 + 0.1) / M, ...),         the SINDER reference code, which turns
                   antialias=True``                             antialias on for its ViT-g
================== ============================================ =========================================

All are bicubic with ``align_corners=False``. None of these calls survives an ONNX export
with dynamic height and width: the dynamo exporter bakes the scale factor of the example
input into the graph, the TorchScript exporter rejects it, and antialias needs opset 18.
Bicubic interpolation is separable, so we build the row and column weight matrices from
tensor arithmetic on the grid size instead; the result matches eager ``F.interpolate`` to
float rounding in every mode.
"""

from __future__ import annotations

import torch

OFFICIAL_OFFSET = 0.1  # facebookresearch/dinov2 `interpolate_offset`

# mode -> (offset added to the output size when computing the scale, antialias)
MODES: dict[str, tuple[float, bool]] = {
    "official": (OFFICIAL_OFFSET, False),
    "hf": (0.0, False),
    "antialias": (0.0, True),
    "official_antialias": (OFFICIAL_OFFSET, True),
}


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _bicubic_weights(out_idx: torch.Tensor, in_size: int, scale: torch.Tensor) -> torch.Tensor:
    """[out, in] weights of ATen's bicubic upsample (A = -0.75, border indices clamped).

    ``scale`` is the input/output ratio used to map output pixels to input coordinates.
    """
    src = (out_idx + 0.5) * scale - 0.5
    base = torch.floor(src)
    t = src - base
    cols = torch.arange(in_size, dtype=out_idx.dtype, device=out_idx.device)
    weights = torch.zeros(out_idx.shape[0], in_size, dtype=out_idx.dtype, device=out_idx.device)
    for k in (-1, 0, 1, 2):
        idx = torch.clamp(base + k, 0, in_size - 1)
        w = _cubic(t - k, -0.75)
        weights = weights + w[:, None] * (cols[None, :] == idx[:, None]).to(out_idx.dtype)
    return weights


def _bicubic_aa_weights(out_idx: torch.Tensor, in_size: int, scale: torch.Tensor) -> torch.Tensor:
    """[out, in] weights of ATen's antialiased bicubic (A = -0.5, window renormalised)."""
    support = 2.0 * torch.clamp(scale, min=1.0)
    inv = 1.0 / torch.clamp(scale, min=1.0)
    center = scale * (out_idx + 0.5)
    lo = torch.clamp(torch.floor(center - support + 0.5), min=0)
    hi = torch.clamp(torch.floor(center + support + 0.5), max=in_size)
    cols = torch.arange(in_size, dtype=out_idx.dtype, device=out_idx.device)[None, :]
    w = _cubic((cols - center[:, None] + 0.5) * inv, -0.5)
    w = w * ((cols >= lo[:, None]) & (cols < hi[:, None])).to(w.dtype)
    return w / w.sum(dim=1, keepdim=True)


def _axis_weights(n_out: int, grid: int, antialias: bool, offset: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(n_out, dtype=torch.float32, device=like.device)
    n = idx[-1] + 1  # the output size as a tensor, so that exports keep it symbolic
    # ATen derives the scale in double precision; a float32 scale (and torch's scalar/tensor,
    # which multiplies by a rounded reciprocal) moves the sample points enough to show at 1e-5.
    wide = torch.float32 if like.device.type == "mps" else torch.float64  # MPS has no float64
    scale = (grid / (n.to(wide) + offset.to(wide))).float()
    if antialias:
        return _bicubic_aa_weights(idx, grid, scale)
    return _bicubic_weights(idx, grid, scale)


def interpolate_patch_pos_embed(patch_pos: torch.Tensor, h0: int, w0: int, mode: str) -> torch.Tensor:
    """Resample a square ``[1, M*M, D]`` patch position embedding to ``[1, h0*w0, D]``."""
    if mode not in MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; expected one of {', '.join(MODES)}")
    offset_value, antialias = MODES[mode]
    num, dim = patch_pos.shape[1], patch_pos.shape[2]
    grid = int(round(num**0.5))
    table = patch_pos.float().reshape(grid, grid, dim)
    hy = torch.arange(h0, dtype=torch.float32, device=patch_pos.device)
    wx = torch.arange(w0, dtype=torch.float32, device=patch_pos.device)
    zero = torch.zeros((), device=patch_pos.device)
    step = torch.full((), offset_value, device=patch_pos.device)
    h_native = (hy[-1] + 1) == grid
    w_native = (wx[-1] + 1) == grid
    if antialias:
        # ATen's antialiased kernel leaves an axis alone when its size does not change, so
        # the offset only reaches the axes that are resampled.
        off_h = torch.where(h_native, zero, step)
        off_w = torch.where(w_native, zero, step)
    else:
        # The official code returns the table untouched on its native square grid and
        # otherwise applies the offset on both axes.
        off_h = off_w = torch.where(h_native & w_native, zero, step)
    wy = _axis_weights(h0, grid, antialias, off_h, patch_pos)
    ww = _axis_weights(w0, grid, antialias, off_w, patch_pos)
    # Two plain matrix products (rows, then columns): onnxruntime's Einsum is several times slower.
    rows = (wy @ table.reshape(grid, grid * dim)).reshape(-1, grid, dim)
    out = ww @ rows
    return out.reshape(1, -1, dim).to(patch_pos.dtype)
