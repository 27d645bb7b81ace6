"""The CLS-attention summary of `sinder analyze`: which blocks it averages and when it has nothing to say."""

import pytest

from sinder.defects.attention import after_first_defect


def _row(i, share, tokens):
    return {"index": i, "cls_attention_share": share, "high_norm_token_share": tokens}


def test_averages_the_blocks_after_the_first_defect_that_saw_high_norm_tokens():
    rows = [_row(0, 0.9, 0.1), _row(1, 0.2, 0.05), _row(2, None, None), _row(3, 0.1, 0.05)]
    summary = after_first_defect(rows, 0)
    assert summary["blocks"] == [1, 3]  # block 0 is the defect layer's own block; block 2 saw none
    assert summary["cls_attention_share"] == pytest.approx(0.15)
    assert summary["high_norm_token_share"] == pytest.approx(0.05)
    assert summary["ratio"] == pytest.approx(3.0)


def test_nothing_to_say_without_a_defect_or_a_block_after_it():
    rows = [_row(0, 0.5, 0.1), _row(1, None, None)]
    assert after_first_defect(rows, None) is None
    assert after_first_defect(rows, 0) is None
    assert after_first_defect(rows, 1) is None
