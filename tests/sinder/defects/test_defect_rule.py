"""The torch forms of the defect rule equal the contract's numpy definition on the same tokens."""

import numpy as np
import pytest
import torch

from contract import defects as contract_rule
from sinder.defects import measure, rule
from sinder.export.wrapper import defect_diagnostics
from sinder.repair.loss import defect_grid_mask


def tokens_with_defects(b=3, h=7, w=9, c=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, h * w, c, generator=gen)
    direction = torch.randn(c, generator=gen)
    for i in range(b):  # a few planted tokens along the direction, others partly aligned
        tokens[i, (5 * i + 3) % (h * w)] = 40 * direction / direction.norm()
        tokens[i, (7 * i + 11) % (h * w)] += 3 * direction / direction.norm()
    tokens[0, 0] = 0.0  # a zero token: unaligned
    return tokens, direction


def test_the_constants_are_the_contracts():
    assert (rule.THRESHOLD_STD, rule.HIGH_NORM_FACTOR, rule.STD_DDOF) == (
        contract_rule.THRESHOLD_STD, contract_rule.HIGH_NORM_FACTOR, contract_rule.STD_DDOF)
    assert measure.DEFAULT_MASK_THRESHOLD == contract_rule.THRESHOLD_STD


@pytest.mark.parametrize("k", [4.0, 2.0, 1.0])
def test_export_graph_form_equals_the_numpy_rule_per_image(k):
    tokens, direction = tokens_with_defects()
    norms, align, mask = defect_diagnostics(tokens, direction, k)
    for i in range(tokens.shape[0]):
        n_ref, a_ref, m_ref = contract_rule.diagnostics(tokens[i].double().numpy(), direction.double().numpy(), k)
        assert np.allclose(norms[i].numpy(), n_ref, rtol=1e-6, atol=1e-5)
        assert np.allclose(align[i].numpy(), a_ref, atol=1e-6)
        assert (mask[i].numpy() == m_ref).all() and m_ref.any()


def test_measure_form_equals_the_numpy_rule():
    tokens, direction = tokens_with_defects(b=1)
    ref = contract_rule.defect_mask(contract_rule.alignment(tokens[0].double().numpy(), direction.double().numpy()))
    assert (measure.defect_mask(tokens[0], direction).numpy() == ref).all()
    norms = tokens[0].norm(dim=-1)
    assert (measure.high_norm_mask(tokens[0]).numpy() == contract_rule.high_norm_mask(norms.double().numpy())).all()


def test_repair_loss_form_equals_the_numpy_rule_with_borders_cleared():
    tokens, direction = tokens_with_defects(b=1, h=8, w=8)
    tokens[0, 3 * 8 + 4] = 40 * direction / direction.norm()  # interior, so the loss keeps it
    align = rule.token_alignment(tokens[0], direction).reshape(8, 8)
    expected = contract_rule.defect_mask(align.double().numpy(), 2.0)
    expected[[0, -1], :] = False
    expected[:, [0, -1]] = False
    got = defect_grid_mask(align, 2.0, kernel=3).numpy()
    assert (got == expected).all() and expected.any()


def test_a_single_token_flags_nothing_in_both_forms():
    one = torch.randn(1, 1, 8)
    with pytest.warns(UserWarning):  # torch's sample std of one value is NaN; the comparison is then false
        _, _, mask = defect_diagnostics(one, torch.randn(8))
    assert not mask.any() and not contract_rule.defect_mask(np.ones(1)).any()
