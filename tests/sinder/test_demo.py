"""The synthetic demo model: deterministic, official layout, and a defect that matches the issue's
acceptance figures on the bundled photos (measured here at 224 px)."""

import pytest
import torch
import torch.nn.functional as F

from sinder import demo
from sinder.defects.directions import defect_directions
from sinder.defects.measure import measure_layers
from sinder.images import list_images, load_image
from sinder.model import ARCHS, build_model


@pytest.fixture(scope="module")
def loaded():
    return demo.load_demo(0)


@pytest.fixture(scope="module")
def directions(loaded):
    return defect_directions(loaded.model)


@pytest.fixture(scope="module")
def photos(demo_photos_dir):
    paths = list_images(demo_photos_dir)
    return paths, [load_image(p, 224) for p in paths]


@pytest.fixture(scope="module")
def stats(loaded, directions, photos):
    paths, images = photos
    return measure_layers(loaded.model, images, directions, names=[p.name for p in paths])


def test_loaded_model_metadata(loaded):
    assert loaded.synthetic is True
    assert loaded.source == "demo:seed=0"
    assert loaded.source_format == "demo"
    assert loaded.arch == demo.DEMO_ARCH == ARCHS["vits14"]
    assert len(loaded.sha256) == 64
    assert not loaded.model.training


def test_official_key_layout(loaded):
    reference = build_model(ARCHS["vits14"]).state_dict()
    state = loaded.model.state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape and state[k].dtype == torch.float32 for k in state)


def test_deterministic_in_the_seed(loaded):
    again = demo.generate_state_dict(0)
    assert demo.state_dict_sha256(again) == loaded.sha256
    assert all(torch.equal(again[k], v) for k, v in loaded.model.state_dict().items())
    small = ARCHS["vits14"].with_(name="small", embed_dim=64, num_heads=1)
    assert demo.state_dict_sha256(demo.generate_state_dict(1, small)) != demo.state_dict_sha256(
        demo.generate_state_dict(2, small))
    assert demo.state_dict_sha256(demo.generate_state_dict(1, small)) == demo.state_dict_sha256(
        demo.generate_state_dict(1, small))


def test_private_channels_are_private(loaded):
    ch = demo.private_channels(0)
    private = list(ch)
    planted = {0: ch.detector, demo.DEFECT_BLOCK: ch.flag}  # block -> the channel its switch reads
    for i, blk in enumerate(loaded.model.blocks):
        assert blk.attn.qkv.weight[:, private].abs().max() == 0, "attention reads a private channel"
        assert blk.attn.proj.weight[private].abs().max() == 0, "attention writes a private channel"
        fc1 = blk.mlp.fc1.weight.detach().clone()
        fc2 = blk.mlp.fc2.weight.detach().clone()
        if i in planted:
            units = torch.nonzero(fc1[:, planted[i]]).flatten()
            assert 0 < len(units) <= 8
            fc1[units] = 0
            fc2[:, units] = 0
        assert fc1[:, private].abs().max() == 0, f"block {i}: an ordinary FFN unit reads a private channel"
        assert fc2[private].abs().max() == 0, f"block {i}: an ordinary FFN unit writes a private channel"


def test_defect_units_visible_to_the_linearisation_flag_units_not(loaded):
    ch = demo.private_channels(0)
    for block, src, lo, hi in ((demo.DEFECT_BLOCK, ch.flag, -1.5, -0.15), (0, ch.detector, -10.0, -3.0)):
        mlp = loaded.model.blocks[block].mlp
        units = torch.nonzero(mlp.fc1.weight[:, src]).flatten()
        ratio = mlp.fc1.bias[units] / mlp.fc1.weight[units].norm(dim=1)
        assert ratio.min() >= lo - 1e-4 and ratio.max() <= hi + 1e-4


def test_layerscale_mixes_tokens(loaded):
    for blk in loaded.model.blocks:
        gammas = torch.cat([blk.ls1.gamma, blk.ls2.gamma])
        assert gammas.median() > 0.1


def test_predicted_direction_is_the_defect_channel_from_the_defect_block_on(directions):
    d = demo.private_channels(0).defect
    assert directions[demo.DEFECT_BLOCK:, d].min() > 0.99
    assert directions[: demo.DEFECT_BLOCK, d].abs().max() < 0.1


def test_acceptance_high_norm_tokens_from_the_defect_layer_on(stats):
    layers = stats["layers"]
    for row in layers[demo.DEFECT_BLOCK:]:
        assert 0.005 <= row["high_norm_fraction"] <= 0.05, row
        assert row["alignment"] is not None and row["alignment"] >= 0.95, row
    assert stats["first_defect_layer"] == demo.DEFECT_BLOCK
    for image in stats["per_image"]:
        assert image["high_norm_fraction"] <= 0.05, image


def test_acceptance_paper_mask_finds_the_defect_at_the_last_layer(stats):
    last = stats["layers"][-1]
    # The mask flags about as many tokens as there are high-norm tokens: the defect, not noise.
    assert last["defect_tokens"] >= 0.8 * last["high_norm_tokens"] > 0
    assert last["defect_fraction"] >= 0.005


def _fc1_defect_off(model):
    """Shrink the top singular value of the defect block's fc1 (the planted units' triplet) to zero."""
    fc1 = model.blocks[demo.DEFECT_BLOCK].mlp.fc1
    u, s, vh = torch.linalg.svd(fc1.weight.detach().double(), full_matrices=False)
    s[0] = 0
    with torch.no_grad():
        fc1.weight.copy_((u * s) @ vh)


def test_one_singular_value_repairs_it_faithfully(loaded, photos):
    """What SINDER tunes (singular values, blocks up to the defect) can remove the defect while
    leaving the other tokens alone."""
    _, images = photos
    repaired = demo.load_demo(0).model
    _fc1_defect_off(repaired)
    ch = demo.private_channels(0)
    patch_cos, cls_cos, high_before, high_after = [], [], 0, 0
    with torch.no_grad():
        for x in images[:8]:
            a = loaded.model.block_outputs(x[None])[-1][0]
            b = repaired.block_outputs(x[None])[-1][0]
            defect = a[1:, ch.defect].abs() > 50
            high_before += int(defect.sum())
            high_after += int((b[1:, ch.defect].abs() > 50).sum())
            patch_cos.append(F.cosine_similarity(a[1:][~defect], b[1:][~defect], dim=-1))
            cls_cos.append(F.cosine_similarity(a[:1], b[:1], dim=-1))
    assert high_before > 0 and high_after == 0
    assert torch.cat(patch_cos).mean() >= 0.98
    assert torch.cat(cls_cos).min() >= 0.98


def test_saved_demo_reloads_as_an_official_checkpoint(loaded, tmp_path):
    from sinder.checkpoints import load_model

    path = tmp_path / "demo.pth"
    torch.save(loaded.model.state_dict(), path)
    again = load_model(path)
    assert again.arch.name == "vits14"
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        assert torch.allclose(again.model(x)["x_norm_patchtokens"], loaded.model(x)["x_norm_patchtokens"], atol=1e-5)
