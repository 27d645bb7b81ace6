"""Linear maps that stand in for one transformer block, as in the SINDER paper.

Each block ``x + ls1*attn(norm1(x))`` then ``x + ls2*ffn(norm2(x))`` is replaced by
``(I + F)(I + A)`` where

- ``A = diag(ls1) W_proj W_v diag(norm1.weight) P`` with ``P = I - 11^T/C`` the LayerNorm
  centering (the value path: attention weights are a convex mix, so a shared direction
  survives them), and
- ``F = diag(ls2) W_out L diag(norm2.weight) P`` with ``L`` the least-squares linear fit of
  the FFN's inner non-linearity to standard-normal inputs ``X`` (``Y ~ X L^T``, no intercept).

The reference code draws 100 000 samples and calls ``lstsq``. The fit has a closed form for
standard-normal inputs: ``E[X X^T] = I`` so the population solution is ``L = E[y(X) X^T]``, and
Stein's lemma (``E[X g(X)] = E[grad g(X)]``) reduces it to one-dimensional Gaussian expectations
per hidden unit. For GELU that expectation is exact in closed form: with ``z ~ N(mu, sigma^2)``
and ``s = sqrt(1 + sigma^2)``, ``E[gelu'(z)] = Phi(mu/s) + mu phi(mu/s) / s^3``. For SiLU (SwiGLU)
and tanh-GELU it is integrated numerically in ``z`` itself, piecewise Gauss-Legendre with
breakpoints where the activation bends (0, +-``_BEND``) and over +-``_SPAN`` standard deviations,
so it stays accurate however large ``|w|`` is (a fixed Gauss-Hermite rule in the standardised
variable loses the bend once ``|w|`` is a few units and its error grows with it). That is what the
sampled fit converges to, without the sampling noise and in a fraction of the time;
``sampled_*`` below is the reference's sampled fit, used to check the closed form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_LEGENDRE_POINTS = 64  # per segment
_SPAN = 12.0  # standard deviations each side of the mean
_BEND = 30.0  # SiLU and tanh-GELU are linear to float precision beyond |z| = 30


def _legendre(dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(_LEGENDRE_POINTS)
    return torch.tensor(x, dtype=dtype, device=device), torch.tensor(w, dtype=dtype, device=device)


def gaussian_expectation(f, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``E[f(z)]`` for ``z ~ N(mean, std^2)``, per element of ``mean``/``std`` (``[H]``, float64).

    ``f`` maps a ``[H, K]`` tensor of points to values. Piecewise Gauss-Legendre over
    ``mean +- _SPAN std``, split at 0 and ``+-_BEND`` where those fall inside.
    """
    std = std.clamp_min(1e-300)
    lo, hi = mean - _SPAN * std, mean + _SPAN * std
    inner = torch.tensor([-_BEND, 0.0, _BEND], dtype=mean.dtype, device=mean.device)
    cuts = torch.cat([lo[:, None], torch.maximum(torch.minimum(inner[None, :], hi[:, None]), lo[:, None]),
                      hi[:, None]], dim=1)  # [H, 5], non-decreasing
    x, w = _legendre(mean.dtype, mean.device)
    left, right = cuts[:, :-1, None], cuts[:, 1:, None]  # [H, 4, 1]
    half = (right - left) / 2
    z = left + half * (x + 1)  # [H, 4, K]
    u = (z - mean[:, None, None]) / std[:, None, None]
    pdf = torch.exp(-0.5 * u * u) / (std[:, None, None] * math.sqrt(2 * math.pi))
    values = f(z.reshape(z.shape[0], -1)).reshape(z.shape)
    return (values * pdf * half * w).sum(dim=(1, 2))


def _gelu_grad(z: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    if approximate == "tanh":
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(F.gelu(z, approximate="tanh").sum(), z)
        return g
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _silu_grad(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def gelu_slope(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Exact ``E[gelu'(z)]`` for ``z ~ N(mean, std^2)`` (erf GELU)."""
    s = torch.sqrt(1 + std * std)
    r = mean / s
    cdf = 0.5 * (1 + torch.erf(r / math.sqrt(2)))
    pdf = torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    return cdf + mean * pdf / s**3


def gelu_fit(weight: torch.Tensor, bias: torch.Tensor | None, approximate: str = "none") -> torch.Tensor:
    """``L [H, C]`` of the least-squares fit ``gelu(W x + b) ~ L x`` over ``x ~ N(0, I)``.

    Per hidden unit ``z = w.x + b ~ N(b, |w|^2)`` and ``E[x gelu(z)] = w E[gelu'(z)]``: a unit
    whose bias sits far below zero relative to ``|w|`` (one that rarely fires on such inputs)
    gets a small slope.
    """
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    scale = w.norm(dim=1)
    if approximate == "tanh":
        slope = gaussian_expectation(lambda z: _gelu_grad(z, "tanh"), b, scale)
    else:
        slope = gelu_slope(b, scale)
    return slope[:, None] * w


def swiglu_fit(weight12: torch.Tensor, bias12: torch.Tensor | None) -> torch.Tensor:
    """``L [H, C]`` of the fit ``silu(W1 x + b1) * (W2 x + b2) ~ L x`` over ``x ~ N(0, I)``.

    Stein: ``E[x f] = w1 E[silu'(z1) z2] + w2 E[silu(z1)]``; with ``z2 = b2 + (w1.w2/|w1|^2)(z1 - b1)
    + independent noise``, both are one-dimensional expectations over ``z1``.
    """
    w1, w2 = weight12.detach().double().chunk(2, dim=0)
    if bias12 is not None:
        b1, b2 = bias12.detach().double().chunk(2)
    else:
        b1 = torch.zeros(w1.shape[0], dtype=torch.float64, device=w1.device)
        b2 = torch.zeros_like(b1)
    s1 = w1.norm(dim=1)
    k = (w1 * w2).sum(dim=1) / s1.clamp_min(1e-300) ** 2  # cov(z1, z2) / var(z1)

    def gated_grad(z1: torch.Tensor) -> torch.Tensor:  # silu'(z1) E[z2 | z1]
        return _silu_grad(z1) * (b2[:, None] + k[:, None] * (z1 - b1[:, None]))

    a = gaussian_expectation(gated_grad, b1, s1)
    c = gaussian_expectation(F.silu, b1, s1)
    return a[:, None] * w1 + c[:, None] * w2


def _ffn_activation(mlp) -> str:
    act = getattr(mlp, "act", None)
    return getattr(act, "approximate", "none") if act is not None else "none"


def ffn_fit(mlp) -> tuple[torch.Tensor, torch.Tensor]:
    """(``L [H, C]``, the output weight ``[C, H]``) for a GELU (fc1/fc2) or SwiGLU (w12/w3) FFN."""
    if hasattr(mlp, "w12"):
        return swiglu_fit(mlp.w12.weight, mlp.w12.bias), mlp.w3.weight.detach().double()
    if hasattr(mlp, "fc1"):
        return gelu_fit(mlp.fc1.weight, mlp.fc1.bias, _ffn_activation(mlp)), mlp.fc2.weight.detach().double()
    raise TypeError(f"cannot linearise an FFN of type {type(mlp).__name__}")


def sampled_ffn_fit(mlp, n_samples: int, generator: torch.Generator, chunk: int = 8192) -> torch.Tensor:
    """The reference code's fit: ``lstsq`` of the FFN's inner activations on ``n_samples`` normal inputs.

    Accumulates the normal equations in chunks so that memory stays flat.
    """
    c = (mlp.w12.weight if hasattr(mlp, "w12") else mlp.fc1.weight).shape[1]
    device = next(mlp.parameters()).device
    xtx = torch.zeros(c, c, dtype=torch.float64, device=device)
    xty = None
    done = 0
    with torch.no_grad():
        while done < n_samples:
            m = min(chunk, n_samples - done)
            # drawn on the CPU so that a seed gives the same samples on every device
            x = torch.randn(m, c, generator=generator, dtype=torch.float64).to(device)
            xf = x.to(mlp_dtype(mlp))
            if hasattr(mlp, "w12"):
                x1, x2 = mlp.w12(xf).chunk(2, dim=-1)
                y = (F.silu(x1) * x2).double()
            else:
                y = mlp.act(mlp.fc1(xf)).double()
            xtx += x.T @ x
            xty = x.T @ y if xty is None else xty + x.T @ y
            done += m
    return torch.linalg.solve(xtx, xty).T


def mlp_dtype(mlp) -> torch.dtype:
    return next(mlp.parameters()).dtype


def centering(c: int, device=None) -> torch.Tensor:
    return (torch.eye(c, dtype=torch.float64, device=device)
            - torch.full((c, c), 1.0 / c, dtype=torch.float64, device=device))


def attention_map(block) -> torch.Tensor:
    """``A [C, C]``: layer scale, output projection, value projection, LayerNorm weight, centering."""
    c = block.ls1.gamma.shape[0]
    w_v = block.attn.qkv.weight.double()[2 * c :]
    a = (block.ls1.gamma.double()[:, None] * block.attn.proj.weight.double()) @ w_v
    return (a * block.norm1.weight.double()[None, :]) @ centering(c, a.device)


def ffn_map(block, fit: torch.Tensor | None = None) -> torch.Tensor:
    """``F [C, C]`` of the block's FFN branch (``fit`` overrides the closed-form fit)."""
    c = block.ls2.gamma.shape[0]
    lin, w_out = ffn_fit(block.mlp)
    if fit is not None:
        lin = fit.double()
    f = (block.ls2.gamma.double()[:, None] * w_out) @ lin
    return (f * block.norm2.weight.double()[None, :]) @ centering(c, f.device)


def block_map(block, fit: torch.Tensor | None = None) -> torch.Tensor:
    """``(I + F)(I + A)``, the block's linear stand-in."""
    c = block.ls1.gamma.shape[0]
    eye = torch.eye(c, dtype=torch.float64, device=block.ls1.gamma.device)
    with torch.no_grad():
        return (eye + ffn_map(block, fit)) @ (eye + attention_map(block))
