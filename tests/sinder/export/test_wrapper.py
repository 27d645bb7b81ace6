"""The export wrapper computes what the PyTorch model computes, in PyTorch (before any ONNX)."""

import numpy as np
import pytest
import torch
from export_helpers import tiny_loaded, unit_direction

from sinder.defects.measure import defect_mask
from sinder.export.parity import parity_images, reference_outputs
from sinder.export.wrapper import ExportWrapper, defect_diagnostics


@pytest.mark.parametrize("registers", [0, 4])
def test_wrapper_matches_model_fp32(registers):
    loaded = tiny_loaded(registers)
    d = unit_direction(64)
    images = parity_images(2, 56, 84)
    ref = reference_outputs(loaded.model, images, d, 4.0)
    with torch.no_grad():
        out = ExportWrapper(loaded.model, d)(torch.from_numpy(images))
    wrapper = ExportWrapper(loaded.model, d)
    got = dict(zip(wrapper.output_names, (o.numpy() for o in out)))
    assert ("register_tokens" in got) == bool(registers)
    for name, r in ref.items():
        assert got[name].shape == r.shape, name
        if r.dtype == bool:
            assert (got[name] == r).mean() > 0.99
        else:
            assert np.abs(got[name] - r).max() <= 1e-4 * max(1.0, float(np.abs(r).max())), name
    assert got["patch_tokens"].shape == (2, 4, 6, 64)


def test_wrapper_fp16_keeps_diagnostics_float32():
    loaded = tiny_loaded()
    d = unit_direction(64)
    images = torch.from_numpy(parity_images(1, 56, 56))
    wrapper = ExportWrapper(loaded.model, d, precision="fp16")
    with torch.no_grad():
        out = dict(zip(wrapper.output_names, wrapper(images)))
        ref = dict(zip(wrapper.output_names, ExportWrapper(loaded.model, d)(images)))
    assert out["patch_tokens"].dtype == torch.float16 and out["cls_token"].dtype == torch.float16
    assert out["token_norms"].dtype == torch.float32 and out["defect_mask"].dtype == torch.bool
    cos = torch.nn.functional.cosine_similarity(out["patch_tokens"].float(), ref["patch_tokens"], dim=-1)
    assert cos.mean() > 0.999
    # the untouched model keeps its float32 weights
    assert next(loaded.model.parameters()).dtype == torch.float32


def test_diagnostics_follow_the_papers_rule():
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, 50, 16, generator=gen)
    d = torch.zeros(16)
    d[5] = 1.0
    tokens[0, 7] = d * 40  # one token fully aligned with the direction
    norms, align, mask = defect_diagnostics(tokens, d * 3.0)  # the direction's scale does not matter
    assert torch.allclose(norms, tokens.norm(dim=-1))
    assert torch.allclose(align, torch.nn.functional.cosine_similarity(tokens, d.expand_as(tokens), dim=-1).abs())
    assert mask[0, 7] and mask[0].sum() == 1
    for i in range(2):
        assert torch.equal(mask[i], defect_mask(tokens[i], d))


def test_diagnostics_zero_token_is_not_nan():
    tokens = torch.zeros(1, 4, 8)
    tokens[0, 1, 0] = 1.0
    norms, align, mask = defect_diagnostics(tokens, torch.ones(8))
    assert torch.isfinite(align).all() and not mask[0, 0]


def test_wrong_direction_width_is_refused():
    with pytest.raises(ValueError, match="width"):
        ExportWrapper(tiny_loaded().model, torch.ones(10))
