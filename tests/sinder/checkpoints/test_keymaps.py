"""Key mapping and architecture detection for the eight named DINOv2 architectures."""

import pytest
import torch
from ckpt_factory import meta_official, random_official
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from sinder.checkpoints import check_fits, detect_arch, detect_format, hf_config, official_to_hf, to_official
from sinder.model import ARCHS, get_arch

NAMES = sorted(ARCHS)


def test_all_eight_archs_are_known():
    assert set(NAMES) == {f"vit{s}14{r}" for s in "sblg" for r in ("", "_reg")}


@pytest.mark.parametrize("name", NAMES)
def test_detect_full_size_arch_from_shapes(name):
    arch = get_arch(name)
    assert detect_arch(meta_official(arch)) == arch


@pytest.mark.parametrize("name", NAMES)
def test_official_hf_round_trip_is_exact(name):
    arch = get_arch(name).with_(depth=2)
    sd = random_official(arch, seed=len(name))
    hf = official_to_hf(sd, arch)
    assert detect_format(hf) == "hf"
    assert not any(k.startswith(("blocks.", "patch_embed")) for k in hf)
    back = to_official(hf, "hf")
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    detected = detect_arch(back)
    assert detected.name == "custom"  # depth 2 matches no named arch
    for field in ("embed_dim", "depth", "num_heads", "ffn", "ffn_hidden", "num_register_tokens", "img_size"):
        assert getattr(detected, field) == getattr(arch, field), field


@pytest.mark.parametrize("name", NAMES)
def test_transformers_in_memory_names_convert(name):
    """transformers 5 renames the Hub keys in memory (q_proj, o_proj, gate/up/down_proj); both must load."""
    arch = get_arch(name).with_(depth=2)
    config = hf_config(arch)
    config.pop("architectures")
    config.pop("model_type")
    with torch.device("meta"):
        if arch.num_register_tokens:
            model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**config))
        else:
            model = Dinov2Model(Dinov2Config(**config))
    sd = model.state_dict()
    if arch.ffn == "swiglu":
        assert any("gate_proj" in k for k in sd)
    assert detect_format(sd) == "hf"
    check_fits(to_official(sd, "hf"), arch)  # every key mapped, every shape right


@pytest.mark.parametrize("arch", [
    get_arch("vits14").with_(name="custom", embed_dim=96, depth=3, num_heads=2, mlp_ratio=3.0),
    get_arch("vitg14").with_(name="custom", embed_dim=64, depth=1, num_heads=1),
    get_arch("vits14_reg").with_(name="custom", embed_dim=32, depth=2, num_heads=1, num_register_tokens=2,
                                 img_size=16 * 7, patch_size=7),
], ids=["odd-width-mlp3", "tiny-swiglu", "small-grid-2-registers"])
def test_odd_shapes_are_detected_and_run(arch):
    from sinder.model import build_model

    sd = random_official(arch)
    detected = detect_arch(sd)
    assert detected == arch  # every shape-determined field, and the defaults for the rest
    model = build_model(detected)
    model.load_state_dict(sd, strict=True)
    out = model(torch.randn(1, 3, 5 * arch.patch_size, 3 * arch.patch_size))
    assert out["x_norm_patchtokens"].shape == (1, 15, arch.embed_dim)
    assert out["x_norm_regtokens"].shape == (1, arch.num_register_tokens, arch.embed_dim)


@pytest.mark.parametrize("width,heads", [(384, 6), (1536, 24), (64, 1), (32, 1), (96, 2), (100, 2), (65, 5)])
def test_head_count_guess(width, heads):
    from sinder.checkpoints import guess_num_heads

    assert guess_num_heads(width) == heads
