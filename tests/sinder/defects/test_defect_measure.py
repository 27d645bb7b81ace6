import pytest
import torch
import torch.nn.functional as F

from defect_factory import TINY, plant, random_model
from sinder.defects import measure
from sinder.defects.directions import defect_directions
from sinder.defects.measure import defect_mask, first_defect_layer, high_norm_mask, measure_layers


def _tokens_with_defects(n=256, c=32, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, c, generator=g)
    direction = F.normalize(torch.randn(c, generator=g), dim=0)
    idx = torch.randperm(n, generator=g)[:k]
    tokens[idx] = 30 * direction + 0.5 * torch.randn(k, c, generator=g)
    return tokens, direction, idx


def test_defect_mask_flags_exactly_the_aligned_tokens():
    tokens, direction, idx = _tokens_with_defects()
    mask = defect_mask(tokens, direction)
    assert mask.dtype == torch.bool and mask.shape == (256,)
    assert set(torch.nonzero(mask).flatten().tolist()) == set(idx.tolist())
    assert torch.equal(mask, defect_mask(tokens, -direction))  # |cos|: the sign does not matter


def test_defect_mask_flags_nothing_past_the_rules_limit():
    # With more than about 1/(1 + 4^2) of tokens aligned, mean + 4 std exceeds 1.
    tokens, direction, _ = _tokens_with_defects(k=40)
    assert not defect_mask(tokens, direction).any()
    assert defect_mask(tokens, direction, threshold_std=2.0).sum() == 40


def test_high_norm_mask():
    tokens, _, idx = _tokens_with_defects()
    mask = high_norm_mask(tokens)
    assert set(torch.nonzero(mask).flatten().tolist()) == set(idx.tolist())
    assert high_norm_mask(tokens, median=1e6).sum() == 0
    assert high_norm_mask(tokens, factor=0.0).all()


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 14 * (4 + i), 14 * 5, generator=g) for i in range(n)]


def test_measure_layers_on_planted_model():
    model = plant(random_model(seed=1), block=1, src=5, dst=17, gain=50.0, out=20.0)
    with torch.no_grad():
        model.pos_embed[0, 1:, 5] = -1.0
        model.pos_embed[0, 1::9, 5] = 1.0  # about 11% of positions fire
    images = _images()
    dirs = defect_directions(model)
    r = measure_layers(model, images, dirs, names=["a", "b", "c"])
    assert [row["index"] for row in r["layers"]] == list(range(TINY.depth))
    for row in r["layers"]:
        assert 0 <= row["defect_fraction"] <= 1 and 0 <= row["high_norm_fraction"] <= 1
        assert row["max_norm"] >= row["median_norm"] > 0
    # Manual pooled statistics at the last layer.
    with torch.no_grad():
        last = torch.cat([model.block_outputs(x[None])[-1][0, 1:] for x in images])
    norms = last.norm(dim=-1)
    med = norms.median()
    high = norms >= 4 * med
    row = r["layers"][-1]
    assert row["median_norm"] == pytest.approx(float(med), rel=1e-5)
    assert row["high_norm_tokens"] == int(high.sum()) > 0
    mean_unit = F.normalize(last[high], dim=-1).mean(0)
    assert row["alignment"] == pytest.approx(float((F.normalize(mean_unit, dim=0) @ dirs[-1]).abs()), abs=1e-3)
    assert row["alignment"] > 0.95
    assert 0 < row["aligned_high_norm_tokens"] <= row["high_norm_tokens"]
    assert r["first_defect_layer"] == 1
    assert [p["name"] for p in r["per_image"]] == ["a", "b", "c"]
    assert sum(p["tokens"] for p in r["per_image"]) == last.shape[0]


def test_measure_layers_two_pass_equals_one_pass(monkeypatch):
    model = plant(random_model(seed=1), block=1, src=5, dst=17, gain=50.0, out=20.0)
    images = _images()
    dirs = defect_directions(model)
    one = measure_layers(model, images, dirs)
    monkeypatch.setattr(measure, "_KEEP_TOKENS_BYTES", 0)
    two = measure_layers(model, images, dirs)
    for a, b in zip(one["layers"], two["layers"]):
        for key in a:
            if a[key] is None:
                assert b[key] is None
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4)


def test_measure_layers_without_high_norm_tokens_reports_none():
    model = random_model(seed=4)
    r = measure_layers(model, _images(1), defect_directions(model), norm_factor=1e6)
    assert all(row["alignment"] is None for row in r["layers"])
    assert r["first_defect_layer"] is None


def test_measure_layers_rejects_bad_input():
    model = random_model()
    with pytest.raises(ValueError):
        measure_layers(model, [], defect_directions(model))
    with pytest.raises(ValueError):
        measure_layers(model, _images(1), torch.zeros(2, TINY.embed_dim))


def test_first_defect_layer_needs_aligned_high_norm_tokens():
    rows = [{"index": 0, "high_norm_tokens": 5, "aligned_high_norm_tokens": 0, "alignment": 0.3},
            {"index": 1, "high_norm_tokens": 0, "aligned_high_norm_tokens": 0, "alignment": None},
            {"index": 2, "high_norm_tokens": 9, "aligned_high_norm_tokens": 2, "alignment": 0.5}]
    assert first_defect_layer(rows) == 2
    assert first_defect_layer(rows[:2]) is None
