import pytest
import torch

from contract import defects as contract_defects

from sinder.repair.loss import TEMPERATURE, defect_grid_mask, neighbour_loss


def _grid(h=8, w=8, c=16, seed=0, along=0.0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(h, w, c, generator=g)
    tokens[..., 0] *= along  # how much the ordinary tokens carry along the defect direction
    direction = torch.zeros(c)
    direction[0] = 1.0
    return tokens, direction


def _plant(tokens, cells, size=40.0):
    tokens = tokens.clone()
    for r, c in cells:
        tokens[r, c, 0] = size
    return tokens


def test_no_defect_gives_no_loss():
    tokens, direction = _grid()
    assert neighbour_loss(tokens, direction) is None


def test_grid_without_interior_gives_no_loss():
    tokens, direction = _grid(2, 5)
    assert neighbour_loss(_plant(tokens, [(0, 2)]), direction) is None


def test_border_tokens_are_never_flagged():
    tokens, direction = _grid()
    planted = _plant(tokens, [(0, 3), (7, 7), (4, 4)])
    res = neighbour_loss(planted, direction)
    assert res is not None
    assert list(zip(res.rows.tolist(), res.cols.tolist())) == [(4, 4)]
    assert not res.mask[0].any() and not res.mask[-1].any() and not res.mask[:, 0].any()


def test_loss_matches_the_reference_formula_for_one_token():
    tokens, direction = _grid(seed=1)
    planted = _plant(tokens, [(3, 4)])
    res = neighbour_loss(planted, direction, mask_thr=4, kernel=3)
    assert res is not None and res.count == 1
    cos = (torch.nn.functional.normalize(planted, dim=-1) @ direction).abs()
    gauss = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=torch.float32) / 16
    win = cos[2:5, 3:6]
    weights = gauss * torch.exp(-win / TEMPERATURE)
    weights = weights / weights.sum()
    target = (planted[2:5, 3:6] * weights[..., None]).sum(dim=(0, 1))
    alpha = planted[1:-1, 1:-1].norm(dim=-1).mean()
    expected = (planted[3, 4] - target).norm() / alpha
    torch.testing.assert_close(res.loss, expected)
    # the defective token itself barely counts in its own target
    assert weights[1, 1] < 1e-3


def test_loss_over_several_tokens_matches_a_direct_loop():
    g = torch.Generator().manual_seed(4)
    tokens = torch.randn(12, 14, 24, generator=g)
    direction = torch.randn(24, generator=g)
    unit = direction / direction.norm()
    for r, c in [(2, 3), (2, 4), (6, 8), (0, 5)]:
        tokens[r, c] += 25 * unit
    res = neighbour_loss(tokens, direction, mask_thr=4, kernel=3)
    cos = (torch.nn.functional.normalize(tokens, dim=-1) @ unit).abs()
    rule = contract_defects.defect_mask(cos.double().numpy(), 4)  # the contract's mask, borders left out below
    flagged = [(r, c) for r in range(1, 11) for c in range(1, 13) if rule[r, c]]
    assert sorted(zip(res.rows.tolist(), res.cols.tolist())) == flagged == [(2, 3), (2, 4), (6, 8)]
    gauss = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])
    dists = []
    for r, c in flagged:
        num, den = torch.zeros(24), 0.0
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                wgt = gauss[dr + 1, dc + 1] * torch.exp(-cos[r + dr, c + dc] / TEMPERATURE)
                num += wgt * tokens[r + dr, c + dc]
                den += wgt
        dists.append((tokens[r, c] - num / den).norm())
    alpha = tokens[1:-1, 1:-1].norm(dim=-1).mean()
    torch.testing.assert_close(res.loss, torch.stack(dists).mean() / alpha)


def test_threshold_follows_mean_plus_k_std():
    cos = torch.zeros(6, 6)
    cos[2, 2] = 1.0
    assert contract_defects.defect_mask(cos.numpy(), 4)[2, 2]
    assert defect_grid_mask(cos, 4, 3)[2, 2]
    # just above the k at which the contract's threshold reaches the outlier: nothing flagged
    k = float((1.0 - cos.mean()) / cos.double().numpy().std(ddof=contract_defects.STD_DDOF)) + 0.01
    assert not defect_grid_mask(cos, k, 3).any()


def test_optimising_the_loss_removes_the_defect():
    tokens, direction = _grid(seed=2, along=0.3)
    planted = _plant(tokens, [(2, 2), (5, 4)])
    x = planted.clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=2.0)
    first = neighbour_loss(x, direction)
    assert first is not None and first.count == 2
    losses = []
    for _ in range(200):
        res = neighbour_loss(x, direction)
        if res is None:
            break
        losses.append(float(res.loss.detach()))
        opt.zero_grad()
        res.loss.backward()
        opt.step()
    assert res is None, "the defect should stop being flagged"
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]
    along = x.detach()[..., 0].abs()
    assert along[2, 2] < 0.5 * 40 and along[5, 4] < 0.5 * 40
    # only the defective tokens moved
    moved = (x.detach() - planted).norm(dim=-1) > 0
    assert moved.nonzero().tolist() == [[2, 2], [5, 4]]


def test_kernel_five_and_bad_kernel():
    tokens, direction = _grid(9, 9, seed=3)
    planted = _plant(tokens, [(4, 4)])
    res = neighbour_loss(planted, direction, kernel=5)
    assert res is not None and res.count == 1
    with pytest.raises(ValueError, match="kernel"):
        neighbour_loss(planted, direction, kernel=4)
