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
