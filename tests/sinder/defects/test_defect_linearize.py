import torch

from sinder.defects.linearize import (
    attention_map,
    block_map,
    ffn_fit,
    gelu_fit,
    sampled_ffn_fit,
    swiglu_fit,
)
from sinder.model.layers import Block, Mlp, SwiGLUFFN


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_gelu_closed_form_matches_sampled_least_squares():
    torch.manual_seed(0)
    mlp = Mlp(24, 96)
    with torch.no_grad():
        mlp.fc1.weight.mul_(3)
        mlp.fc1.bias.normal_(0, 1.0)
    sampled = sampled_ffn_fit(mlp, 200_000, torch.Generator().manual_seed(1))
    closed, _ = ffn_fit(mlp)
    assert closed.shape == (96, 24)
    assert _rel_err(sampled, closed) < 0.03


def test_swiglu_closed_form_matches_sampled_least_squares():
    torch.manual_seed(0)
    mlp = SwiGLUFFN(24, 64)
    with torch.no_grad():
        mlp.w12.weight.mul_(3)
        mlp.w12.bias.normal_(0, 1.0)
    sampled = sampled_ffn_fit(mlp, 200_000, torch.Generator().manual_seed(1))
    closed = swiglu_fit(mlp.w12.weight, mlp.w12.bias)
    assert _rel_err(sampled, closed) < 0.03


def test_gelu_fit_slope_depends_on_bias_relative_to_weight_norm():
    w = torch.zeros(4, 8)
    w[:, 0] = 10.0
    b = torch.tensor([0.0, -1.5, -4.0, 5.0]) * 10.0
    slopes = gelu_fit(w, b)[:, 0] / 10.0
    # A step-like unit's slope is P(z > 0) = Phi(b / |w|).
    expected = torch.distributions.Normal(0, 1).cdf(torch.tensor([0.0, -1.5, -4.0, 5.0])).double()
    assert torch.allclose(slopes, expected, atol=0.02)
    assert slopes[2] < 1e-3 < slopes[1]  # far-below-zero biases are invisible to the fit


def test_block_map_is_residual_plus_branches():
    torch.manual_seed(0)
    blk = Block(16, 2, 64, "mlp", layerscale_init=0.2)
    with torch.no_grad():
        blk.ls1.gamma.zero_()
        blk.ls2.gamma.zero_()
    assert torch.allclose(block_map(blk), torch.eye(16, dtype=torch.float64))
    with torch.no_grad():
        blk.ls1.gamma.fill_(0.2)
    a = attention_map(blk)
    # Centering: LayerNorm removes the mean, so the all-ones vector is invisible to the branch.
    assert torch.allclose(a @ torch.ones(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(block_map(blk), torch.eye(16, dtype=torch.float64) + a)


def _least_squares_with_errors(x, y):
    """OLS of ``y`` on ``x`` and its heteroscedasticity-robust standard errors (HC0)."""
    xtx_inv = torch.linalg.inv(x.T @ x)
    coef = xtx_inv @ (x.T @ y)
    r = y - x @ coef
    xr = x * r[:, None]
    cov = xtx_inv @ (xr.T @ xr) @ xtx_inv
    return coef, cov.diagonal().sqrt()


def test_fits_match_least_squares_on_a_million_samples_at_any_row_norm():
    import torch.nn.functional as F

    x = torch.randn(1_000_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for norm in (0.5, 2.0, 8.0, 20.0, 50.0):
        for ratio in (0.0, -0.5, -1.5, 0.8):  # bias in units of the row norm
            w1 = torch.tensor([[norm, 0.0, 0.0]], dtype=torch.float64)
            b1 = torch.tensor([ratio * norm], dtype=torch.float64)
            coef, se = _least_squares_with_errors(x, F.gelu(x @ w1.T + b1)[:, 0])
            fit = gelu_fit(w1, b1)[0]
            assert ((fit - coef).abs() <= 6 * se + 1e-9).all(), (norm, ratio, fit, coef, se)
            w2 = torch.tensor([[0.3 * norm, 1.0, 0.0]], dtype=torch.float64)
            b2 = torch.tensor([0.5], dtype=torch.float64)
            y = (F.silu(x @ w1.T + b1) * (x @ w2.T + b2))[:, 0]
            coef, se = _least_squares_with_errors(x, y)
            fit = swiglu_fit(torch.cat([w1, w2]), torch.cat([b1, b2]))[0]
            assert ((fit - coef).abs() <= 6 * se + 1e-9).all(), (norm, ratio, fit, coef, se)


def test_gelu_closed_form_is_exact_where_the_slope_is_known():
    from sinder.defects.linearize import gaussian_expectation, gelu_slope

    # |w| -> 0: the slope is gelu'(b); |w| -> infinity: P(z > 0) = Phi(b / |w|).
    b = torch.tensor([-2.0, 0.0, 1.0], dtype=torch.float64)
    tiny = gelu_slope(b, torch.full_like(b, 1e-8))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    assert torch.allclose(tiny, normal.cdf(b) + b * normal.log_prob(b).exp(), atol=1e-12)
    huge = gelu_slope(b * 1e6, torch.full_like(b, 1e6))
    assert torch.allclose(huge, normal.cdf(b), atol=1e-6)
    # The numerical rule used for SiLU gives the same numbers on GELU, at small and large |w|.
    from sinder.defects.linearize import _gelu_grad

    for scale in (0.3, 5.0, 1345.0):
        std = torch.full((3,), scale, dtype=torch.float64)
        mean = torch.tensor([-0.15, 0.0, 0.4], dtype=torch.float64) * scale
        assert torch.allclose(gaussian_expectation(_gelu_grad, mean, std), gelu_slope(mean, std), atol=1e-10)
