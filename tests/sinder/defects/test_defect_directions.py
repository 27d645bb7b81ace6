
import pytest
import torch

from defect_factory import TINY, plant, random_model
from sinder.defects.directions import block_maps, defect_directions, directions_summary, fix_sign
from sinder.model import ArchConfig, LoadedModel, build_model


def test_shape_unit_norm_sign_and_determinism():
    model = random_model()
    d = defect_directions(model)
    assert d.shape == (TINY.depth, TINY.embed_dim)
    assert d.dtype == torch.float32
    assert torch.allclose(d.norm(dim=1), torch.ones(TINY.depth), atol=1e-5)
    for row in d:
        assert row[row.abs().argmax()] > 0
    assert torch.equal(d, defect_directions(model))


def test_matches_leading_singular_vector_of_block_product():
    model = random_model(seed=3)
    maps = block_maps(model)
    d = defect_directions(model)
    prod = torch.eye(TINY.embed_dim, dtype=torch.float64)
    for i, m in enumerate(maps):
        prod = m @ prod
        u = torch.linalg.svd(prod).U[:, 0]
        assert abs(float(u.float() @ d[i])) > 1 - 1e-4


def test_planted_defect_found_from_its_block_on():
    model = plant(random_model(seed=1), block=1, src=5, dst=17)
    d = defect_directions(model)
    assert d[1:, 17].min() > 0.99
    assert d[0, 17].abs() < 0.5


def test_bias_far_below_zero_hides_the_units():
    # The paper's fit only sees units that fire on some standard-normal inputs.
    model = plant(random_model(seed=1), block=1, src=5, dst=17, bias_over_norm=-6.0)
    assert defect_directions(model)[1:, 17].abs().max() < 0.5


def test_sampled_fit_agrees_with_closed_form():
    model = plant(random_model(seed=2), block=2, src=3, dst=30)
    closed = defect_directions(model)
    sampled = defect_directions(model, n_samples=20_000, seed=5)
    assert (closed[2:] * sampled[2:]).sum(dim=1).abs().min() > 0.99
    with pytest.raises(ValueError):
        defect_directions(model, n_samples=-1)


def test_accepts_loaded_model_and_swiglu():
    cfg = ArchConfig("tiny_g", embed_dim=32, depth=3, num_heads=2, ffn="swiglu", layerscale_init=0.3)
    torch.manual_seed(0)
    model = build_model(cfg)
    loaded = LoadedModel(model=model, arch=cfg, source="x", source_format="official", sha256="0")
    d = defect_directions(loaded)
    assert d.shape == (3, 32) and torch.isfinite(d).all()


def test_summary_lists_dominance_and_channels():
    model = plant(random_model(seed=1), block=1, src=5, dst=17)
    rows = directions_summary(model, top_channels=3)
    assert [r["index"] for r in rows] == list(range(TINY.depth))
    assert rows[-1]["top_channels"][0]["channel"] == 17
    assert rows[-1]["singular_value_ratio"] > rows[0]["singular_value_ratio"]
    assert len(rows[0]["direction"]) == TINY.embed_dim


def test_fix_sign():
    assert torch.equal(fix_sign(torch.tensor([0.1, -0.9, 0.3])), torch.tensor([-0.1, 0.9, -0.3]))
    assert torch.equal(fix_sign(torch.tensor([0.1, 0.9])), torch.tensor([0.1, 0.9]))
