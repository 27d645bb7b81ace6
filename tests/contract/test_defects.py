"""The defect rule (contract/defects.py): the paper's mask with the sample std, the high-norm rule."""

import numpy as np
import pytest

from contract import defects


def test_mask_uses_the_sample_std_over_the_image_tokens():
    align = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9])
    mean, sample, population = align.mean(), align.std(ddof=1), align.std()
    # k chosen between the two conventions: only the sample one leaves the outlier unflagged
    k = (0.9 - mean) / sample + 1e-3
    assert (0.9 - mean) / population > k
    assert not defects.defect_mask(align, k).any()
    assert defects.defect_mask(align, k - 2e-3).tolist() == [False] * 17 + [True]
    assert defects.STD_DDOF == 1 and defects.THRESHOLD_STD == 4.0 and defects.HIGH_NORM_FACTOR == 4.0


def test_statistics_pool_every_token_of_the_image_whatever_its_shape():
    rng = np.random.default_rng(0)
    grid = rng.uniform(0, 0.2, (6, 7))
    grid[2, 3] = 0.95
    assert defects.defect_mask(grid).sum() == 1 and defects.defect_mask(grid)[2, 3]
    assert (defects.defect_mask(grid) == defects.defect_mask(grid.reshape(-1)).reshape(6, 7)).all()


@pytest.mark.parametrize("align", [np.array([]), np.array([0.9])])
def test_fewer_than_two_tokens_flag_nothing(align):
    assert not defects.defect_mask(align).any() and defects.defect_mask(align).shape == align.shape


def test_alignment_is_abs_cosine_and_a_zero_token_is_unaligned():
    tokens = np.array([[3.0, 0.0], [-2.0, 0.0], [0.0, 5.0], [0.0, 0.0], [1.0, 1.0]])
    align = defects.alignment(tokens, np.array([2.0, 0.0]))
    assert np.allclose(align, [1.0, 1.0, 0.0, 0.0, 2 ** -0.5])
    with pytest.raises(ValueError, match="non-zero"):
        defects.alignment(tokens, np.zeros(2))


def test_high_norm_rule_is_at_least_f_times_the_median():
    norms = np.array([1.0, 1.0, 1.0, 1.0, 4.0, 3.99, 10.0])  # median 1
    assert defects.high_norm_mask(norms).tolist() == [False] * 4 + [True, False, True]
    assert defects.high_norm_mask(norms, 2.0, median=2.0).tolist() == [False] * 4 + [True, False, True]


def test_diagnostics_match_the_graph_outputs_meaning():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=64)
    tokens = rng.normal(size=(8, 9, 64))
    tokens[1, 2] = 30 * direction / np.linalg.norm(direction)
    norms, align, mask = defects.diagnostics(tokens, direction)
    assert norms.shape == align.shape == mask.shape == (8, 9)
    assert mask[1, 2] and mask.sum() == 1 and np.isclose(align[1, 2], 1.0) and np.isclose(norms[1, 2], 30)
    assert "mean + 4 * std" in defects.rule_text() and "ddof=1" in defects.rule_text()
