"""The entangled demo: dense weights, a content-triggered defect at half depth that later blocks read,
and the acceptance figures of issue 12 on the bundled photos (measured at 224 px)."""

import pytest
import torch
import torch.nn.functional as F

from sinder import demo_entangled as ent
from sinder.defects.attention import cls_attention_to_high_norm
from sinder.defects.directions import defect_directions
from sinder.defects.measure import measure_layers
from sinder.demo import load_demo_kind, state_dict_sha256
from sinder.images import list_images, load_image
from sinder.model import ARCHS, build_model

TINY = ARCHS["vits14"].with_(name="tiny", embed_dim=64, num_heads=2, depth=8, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def loaded():
    return ent.load_entangled_demo(0)


@pytest.fixture(scope="module")
def photos(demo_photos_dir):
    paths = list_images(demo_photos_dir)
    return paths, [load_image(p, 224) for p in paths]


@pytest.fixture(scope="module")
def stats(loaded, photos):
    paths, images = photos
    return measure_layers(loaded.model, images, defect_directions(loaded.model), names=[p.name for p in paths])


def test_metadata_and_layout(loaded):
    assert loaded.synthetic is True
    assert loaded.source == "demo-entangled:seed=0"
    assert loaded.arch == ARCHS["vits14"]
    reference = build_model(ARCHS["vits14"]).state_dict()
    state = loaded.model.state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape and state[k].dtype == torch.float32 for k in state)
    assert load_demo_kind("entangled", 0).sha256 == loaded.sha256


def test_deterministic_in_the_seed():
    a, b, c = (state_dict_sha256(ent.generate_entangled_state_dict(s, TINY)) for s in (1, 1, 2))
    assert a == b != c


def test_dense_weights_no_private_channels(loaded):
    # Every residual channel is read and written by ordinary weights in every block.
    for blk in loaded.model.blocks:
        assert (blk.attn.qkv.weight.abs().sum(dim=0) > 0).all()
        assert (blk.mlp.fc2.weight.abs().sum(dim=1) > 0).all()
    _, info = ent.generate_with_info(0)
    d = info["trigger"]["direction"]
    energy = (d**2).sort(descending=True).values
    assert float(energy[:10].sum()) < 0.25, "the defect direction should be dense, not a few channels"


def test_acceptance_defect_from_half_depth_on(stats):
    layers = stats["layers"]
    for row in layers[: ent.DEFECT_BLOCK]:
        assert row["high_norm_fraction"] < 0.005, row
    for row in layers[ent.DEFECT_BLOCK:]:
        assert 0.005 <= row["high_norm_fraction"] <= 0.05, row
        assert row["alignment"] is not None and row["alignment"] >= 0.9, row
    assert stats["first_defect_layer"] == ent.DEFECT_BLOCK


def test_later_blocks_read_the_defect(loaded, photos):
    rows = cls_attention_to_high_norm(loaded, photos[1])
    last = rows[-ent._SINK_BLOCKS:]
    # Over the last blocks, the CLS token gives the high-norm tokens well over their share of the tokens.
    share = sum(r["cls_attention_share"] for r in last) / len(last)
    tokens = sum(r["high_norm_token_share"] for r in last) / len(last)
    assert share >= 1.5 * tokens, last
    assert all(r["cls_attention_share"] is None for r in rows[: ent.DEFECT_BLOCK + 1])


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


def test_trigger_follows_the_content_not_the_position(loaded, photos):
    paths, images = photos
    im = images[[p.name for p in paths].index("rocket.jpg")]
    assert im.shape[-2:] == (224, 336)
    shift = 3  # patches
    left, right = im[..., :224], im[..., 14 * shift : 14 * shift + 224]
    with torch.no_grad():
        a, b = (loaded.model.block_outputs(x[None])[-1][0, 1:].norm(dim=-1).reshape(16, 16) for x in (left, right))
    high_a, high_b = a >= 4 * a.median(), b >= 4 * b.median()
    assert high_a.sum() >= 3
    by_content = _jaccard(high_a[:, shift:], high_b[:, : 16 - shift])  # the same pixels in both crops
    by_position = _jaccard(high_a, high_b)  # the same grid cells
    assert by_content >= 0.3 and by_content > by_position + 0.1, (by_content, by_position)


def test_prediction_depends_on_where_the_trigger_threshold_lives(loaded, photos):
    import copy

    base = defect_directions(loaded.model)
    moved = copy.deepcopy(loaded.model)
    blk = moved.blocks[ent.DEFECT_BLOCK]
    with torch.no_grad():  # the same function: norm2.bias folded into fc1.bias
        blk.mlp.fc1.bias.add_(blk.mlp.fc1.weight @ blk.norm2.bias)
        blk.norm2.bias.zero_()
        a = loaded.model.block_outputs(photos[1][0][None])[-1]
        b = moved.block_outputs(photos[1][0][None])[-1]
    assert float((a - b).norm() / a.norm()) < 1e-4
    agree = (defect_directions(moved) * base).sum(dim=1).abs()
    assert (agree[: ent.DEFECT_BLOCK] > 0.9).all() and (agree[ent.DEFECT_BLOCK :] < 0.5).all()
