"""Our DINOv2 against transformers' Dinov2Model / Dinov2WithRegistersModel as the oracle.

The same random weights, converted from the HF layout, must give HF's ``last_hidden_state``
(tokens after the final LayerNorm: CLS, registers, patches) within 1e-4.
"""

import pytest
import torch
from dinov2_test_weights import randomize_
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from sinder.checkpoints import detect_arch, detect_format, load_model, official_to_hf, to_official
from sinder.model import build_model

RESOLUTIONS = [(224, 224), (196, 308)]


def hf_model(registers: int = 0, swiglu: bool = False, layers: int = 3, hidden: int = 128, seed: int = 0):
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                  image_size=518, patch_size=14, use_swiglu_ffn=swiglu, attn_implementation="eager")
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    return randomize_(model, seed).eval()


def ours_from(hf, interpolation: str):
    sd = hf.state_dict()
    assert detect_format(sd) == "hf"
    official = to_official(sd, "hf")
    arch = detect_arch(official).with_(interpolation=interpolation)
    model = build_model(arch)
    model.load_state_dict(official, strict=True)
    return model


def normed_tokens(model, x):
    out = model(x)
    return torch.cat([out["x_norm_clstoken"][:, None], out["x_norm_regtokens"], out["x_norm_patchtokens"]], dim=1)


def images(h, w, n=2, seed=1):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


CASES = {
    "dinov2": dict(kind={}, interpolation="hf"),
    "registers": dict(kind=dict(registers=4, layers=2), interpolation="antialias"),
    "swiglu": dict(kind=dict(swiglu=True, layers=2), interpolation="hf"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@torch.no_grad()
def test_last_hidden_state_matches_transformers(case):
    spec = CASES[case]
    hf = hf_model(**spec["kind"])
    ours = ours_from(hf, spec["interpolation"]).eval()
    for h, w in RESOLUTIONS:
        x = images(h, w)
        ref = hf(pixel_values=x).last_hidden_state
        got = normed_tokens(ours, x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() < 1e-4, (case, h, w)
        # the blocks matter: without them the tokens would be far from HF's
        no_blocks = hf.layernorm(hf.embeddings(x))
        assert (no_blocks - ref).abs().max().item() > 0.1


@torch.no_grad()
def test_wrong_interpolation_is_visible():
    # The parity above would be meaningless if the interpolation made no difference.
    hf = hf_model(layers=1)
    x = images(196, 308)
    ref = hf(pixel_values=x).last_hidden_state
    wrong = normed_tokens(ours_from(hf, "official"), x)
    assert (wrong - ref).abs().max().item() > 1e-3


@torch.no_grad()
def test_prenorm_tokens_are_hf_hidden_states_before_layernorm():
    hf = hf_model(layers=2)
    ours = ours_from(hf, "hf")
    x = images(224, 224, n=1)
    hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states
    blocks = ours.block_outputs(x)
    assert len(blocks) == len(hidden) - 1
    for mine, theirs in zip(blocks, hidden[1:]):
        assert (mine - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("registers,swiglu", [(0, False), (4, False), (0, True)])
@torch.no_grad()
def test_official_to_hf_output_loads_in_transformers(tmp_path, registers, swiglu):
    """Our model -> official_to_hf -> a HF folder -> from_pretrained, and load_model of that folder."""
    from safetensors.torch import save_file

    from sinder.checkpoints import hf_config

    hf_ref = hf_model(registers=registers, swiglu=swiglu, layers=2, seed=3)
    interpolation = "antialias" if registers else "hf"
    ours = ours_from(hf_ref, interpolation)
    folder = tmp_path / "hf"
    folder.mkdir()
    converted = official_to_hf(ours.state_dict(), ours.cfg)
    save_file({k: v.contiguous() for k, v in converted.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(__import__("json").dumps(hf_config(ours.cfg)))
    cls = Dinov2WithRegistersModel if registers else Dinov2Model
    hf = cls.from_pretrained(folder, attn_implementation="eager").eval()
    x = images(196, 308, n=1)
    ref = hf(pixel_values=x).last_hidden_state
    assert (normed_tokens(ours, x) - ref).abs().max().item() < 1e-4

    loaded = load_model(folder)
    assert loaded.source_format == "hf"
    assert loaded.arch.interpolation == interpolation
    assert loaded.arch.num_register_tokens == registers
    assert (normed_tokens(loaded.model, x) - ref).abs().max().item() < 1e-4
