"""The test-time register intervention: what it edits, per image, and what it leaves alone."""

import sys
from pathlib import Path

import pytest
import torch

from sinder.registers import TestTimeRegisters, move_to_register, signed_max
from sinder.registers.model import ffn_hidden, neuron_tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_helpers import tiny_loaded  # noqa: E402


def test_signed_max_keeps_the_sign_of_the_largest_magnitude():
    values = torch.tensor([[1.0, -3.0], [2.0, 0.5], [-1.0, 1.0]])
    assert signed_max(values, dim=0).tolist() == [2.0, -3.0]


def test_move_to_register_edits_patches_and_extra_token_per_image():
    hidden = torch.randn(2, 6, 5)  # 1 CLS, 4 patches, 1 extra token
    hidden[1, 3, 2] = -50.0  # image 1's peak of neuron 2, negative
    hidden[0, 0, 4] = 40.0  # image 0's peak of neuron 4 is on the CLS token
    cols, sel = neuron_tables({0: [4, 2]}, depth=1, width=5)[0]
    out = move_to_register(hidden, cols, sel, num_prefix=1)
    for b in range(2):
        for n in (2, 4):
            assert torch.all(out[b, 1:5, n] == 0)
            peak = hidden[b, :, n][hidden[b, :, n].abs().argmax()]
            assert out[b, 5, n] == peak
    assert out[1, 5, 2] == -50.0 and out[0, 5, 4] == 40.0
    keep = [0, 1, 3]
    assert torch.equal(out[..., keep], hidden[..., keep])  # other neurons untouched
    assert torch.equal(out[:, 0], hidden[:, 0])  # CLS keeps its activations


def test_bad_neuron_indices_are_named():
    with pytest.raises(ValueError, match="layer 3"):
        neuron_tables({3: [0]}, depth=2, width=8)
    with pytest.raises(ValueError, match=r"\[9\]"):
        neuron_tables({0: [1, 9]}, depth=2, width=8)


@pytest.fixture(scope="module")
def tiny():
    return tiny_loaded().model


def test_no_neurons_gives_the_model_plus_an_inert_token(tiny):
    # An extra token still takes part in attention, so outputs move a little but stay the model's shapes.
    ttr = TestTimeRegisters(tiny, {})
    x = torch.randn(2, 3, 56, 70)
    out, ref = ttr.forward_features(x), tiny.forward_features(x)
    for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
        assert out[key].shape == ref[key].shape
    assert len(ttr.block_outputs(x)) == len(tiny.blocks)


def test_edited_neurons_are_zero_on_patches_inside_the_model(tiny):
    ttr = TestTimeRegisters(tiny, {1: [3, 7]})
    seen = {}
    blk = tiny.blocks[1]
    original = blk.mlp.fc2.forward

    def spy(h):
        seen["hidden"] = h.detach().clone()
        return original(h)

    blk.mlp.fc2.forward = spy
    try:
        ttr.forward_features(torch.randn(2, 3, 56, 56))
    finally:
        del blk.mlp.fc2.forward
    h = seen["hidden"]  # [B, 1 + 16 + 1, H]
    assert torch.all(h[:, 1:-1, [3, 7]] == 0)
    assert torch.all(h[:, -1, [3, 7]] != 0)


def test_each_image_is_edited_alone(tiny):
    ttr = TestTimeRegisters(tiny, {0: [1, 2, 5], 1: [0]})
    x = torch.randn(3, 3, 56, 56)
    batch = ttr.forward_features(x)["x_norm_patchtokens"]
    for i in range(3):
        alone = ttr.forward_features(x[i : i + 1])["x_norm_patchtokens"][0]
        torch.testing.assert_close(batch[i], alone, atol=1e-5, rtol=1e-5)


def test_swiglu_activation_is_silu_gate_times_value():
    loaded = tiny_loaded()
    from sinder.model import build_model

    vit = build_model(loaded.arch.with_(ffn="swiglu"))
    mlp = vit.blocks[0].mlp
    x = torch.randn(4, loaded.arch.embed_dim)
    x1, x2 = mlp.w12(x).chunk(2, dim=-1)
    torch.testing.assert_close(ffn_hidden(mlp, x), torch.nn.functional.silu(x1) * x2)
    ttr = TestTimeRegisters(vit, {0: [0, mlp.w3.in_features - 1]})
    assert ttr.forward_features(torch.randn(1, 3, 56, 56))["x_norm_patchtokens"].shape[1] == 16
