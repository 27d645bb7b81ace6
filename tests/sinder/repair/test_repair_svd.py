import copy

import pytest
import torch
from torch import nn

from sinder.repair.svd import SVDLinear, apply_svd, block_epsilons, fold_svd, named_epsilons

from toy_defect import TOY_ARCH, make_toy_model


def _image(seed=0, size=112):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomise_eps(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in named_epsilons(model).values():
            p.copy_(scale * torch.randn(p.shape, generator=g))


def test_exact_at_zero_and_only_epsilon_trainable():
    model = make_toy_model()
    x = _image()
    with torch.no_grad():
        ref = model(x)["x_prenorm"]
    svd_model = copy.deepcopy(model)
    replaced = apply_svd(svd_model)
    assert len(replaced) == 4 * TOY_ARCH.depth
    assert not any(type(m) is nn.Linear for m in svd_model.modules())
    with torch.no_grad():
        out = svd_model(x)["x_prenorm"]
    assert torch.equal(out, ref)  # W0 + U·diag(0)·Vᵀ is W0 bit for bit
    trainable = [n for n, p in svd_model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".epsilon") for n in trainable)
    assert len(trainable) == 4 * TOY_ARCH.depth
    # qkv: only the value rows carry an epsilon
    c = TOY_ARCH.embed_dim
    assert svd_model.blocks[0].attn.qkv.epsilon.shape == (c,)
    assert svd_model.blocks[0].attn.qkv.row0 == 2 * c
    assert [len(b) for b in block_epsilons(svd_model)] == [4] * TOY_ARCH.depth


def test_effective_weight_is_u_diag_s_plus_eps_vt():
    lin = nn.Linear(24, 72)
    svd = SVDLinear(lin, row0=48)
    with torch.no_grad():
        svd.epsilon.copy_(torch.randn(svd.epsilon.shape, generator=torch.Generator().manual_seed(3)))
    w = svd.effective_weight()
    u, s, vh = (t.double() for t in svd.factors())
    expected_v = u @ torch.diag(s + svd.epsilon.double()) @ vh
    torch.testing.assert_close(w[48:].double(), expected_v, atol=1e-5, rtol=1e-5)
    assert torch.equal(w[:48], lin.weight[:48])  # q and k untouched
    # U and Vh orthonormal: the fold only moves singular values
    eye = torch.eye(s.numel(), dtype=torch.float64)
    torch.testing.assert_close(u.T @ u, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(vh @ vh.T, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, lin.weight[48:].double(), atol=1e-5, rtol=1e-5)


def test_weight_cache_follows_in_place_updates():
    svd = SVDLinear(nn.Linear(8, 8))
    w0 = svd.effective_weight().clone()
    with torch.no_grad():
        svd.epsilon.add_(0.5)
    assert not torch.allclose(svd.effective_weight(), w0)
    with torch.no_grad():
        svd.epsilon.zero_()
    assert torch.equal(svd.effective_weight(), w0)


@pytest.mark.parametrize("n_tokens", [3, 400])  # both gradient paths (token-first and weight-first)
def test_epsilon_gradient_matches_autograd_reference(n_tokens):
    torch.manual_seed(0)
    lin = nn.Linear(20, 60).double()
    svd = SVDLinear(lin, row0=40)
    with torch.no_grad():
        svd.epsilon.normal_()
    x = torch.randn(2, n_tokens, 20, dtype=torch.float64, requires_grad=True)
    eps = svd.epsilon.detach().clone().requires_grad_()
    u, s, vh = svd.factors()
    w = torch.cat([svd.weight0[:40], u @ torch.diag(s + eps) @ vh])
    y_ref = nn.functional.linear(x, w, svd.bias)
    g = torch.randn_like(y_ref)
    ge_ref, gx_ref = torch.autograd.grad(y_ref, [eps, x], g)
    y = svd(x)
    ge, gx = torch.autograd.grad(y, [svd.epsilon, x], g)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(ge, ge_ref)
    torch.testing.assert_close(gx, gx_ref)


def test_fold_equals_parametrised_and_restores_layout():
    model = make_toy_model()
    keys = list(model.state_dict())
    svd_model = copy.deepcopy(model)
    apply_svd(svd_model)
    _randomise_eps(svd_model)
    x = _image(5)
    with torch.no_grad():
        param_out = svd_model(x)["x_prenorm"]
    fold_svd(svd_model)
    with torch.no_grad():
        folded_out = svd_model(x)["x_prenorm"]
    torch.testing.assert_close(folded_out, param_out, atol=1e-6, rtol=1e-6)
    assert list(svd_model.state_dict()) == keys
    assert all(type(m) is not SVDLinear for m in svd_model.modules())
    assert not any(p.requires_grad for p in svd_model.parameters())
    # the folded state dict loads strictly into a fresh model
    fresh = type(model)(TOY_ARCH)
    fresh.load_state_dict(svd_model.state_dict(), strict=True)


def test_wide_and_tall_weights_factorise_the_same_way():
    for shape in [(30, 12), (12, 30)]:
        lin = nn.Linear(shape[1], shape[0])
        u, s, vh = SVDLinear(lin).factors()
        assert u.shape == (shape[0], 12) and vh.shape == (12, shape[1])
        torch.testing.assert_close(u @ torch.diag(s) @ vh, lin.weight.detach(), atol=1e-5, rtol=1e-5)


def test_layers_without_gradient_are_never_factorised():
    model = make_toy_model()
    apply_svd(model)
    with torch.no_grad():
        model(_image())
    assert all(m.U is None for m in model.modules() if isinstance(m, SVDLinear))
    assert not any(k.endswith((".U", ".S", ".Vh")) for k in model.state_dict())


def test_untouched_layers_fold_to_original_bytes():
    model = make_toy_model()
    svd_model = copy.deepcopy(model)
    apply_svd(svd_model)
    with torch.no_grad():
        svd_model.blocks[2].mlp.fc1.epsilon.fill_(0.1)
    fold_svd(svd_model)
    orig, new = model.state_dict(), svd_model.state_dict()
    changed = [k for k in orig if not torch.equal(orig[k], new[k])]
    assert changed == ["blocks.2.mlp.fc1.weight"]
