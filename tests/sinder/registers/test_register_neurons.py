"""Finding register neurons on the synthetic demo model, whose defect-writing units are known."""

import pytest
import torch

from sinder.demo import DEFECT_BLOCK, load_demo, private_channels
from sinder.images import list_images, load_image, split_images
from sinder.registers import NeuronSearch, TestTimeRegisters, find_register_neurons
from sinder.repair.evaluate import compare_models


@pytest.fixture(scope="module")
def demo():
    return load_demo()


@pytest.fixture(scope="module")
def split(demo_photos_dir):
    return split_images(list_images(demo_photos_dir), 0.25, seed=0)


@pytest.fixture(scope="module")
def found(demo, split):
    train, _ = split
    return find_register_neurons(demo.model, [load_image(p, 224) for p in train[:6]])


def _planted_units(vit) -> dict[int, set[int]]:
    """Units whose output weights write only into the demo's private channels (flag, defect)."""
    private = list(private_channels())
    out = {}
    for i, blk in enumerate(vit.blocks):
        w = blk.mlp.fc2.weight.detach()
        public = torch.ones(w.shape[0], dtype=torch.bool)
        public[private] = False
        writes_private = w[private].abs().sum(0) > 0
        silent_elsewhere = w[public].abs().sum(0) == 0
        units = set(torch.nonzero(writes_private & silent_elsewhere).flatten().tolist())
        if units:
            out[i] = units
    return out


def test_finds_only_planted_units_and_the_layers_where_the_defect_appears(demo, found):
    planted = _planted_units(demo.model)
    assert set(planted) == {0, DEFECT_BLOCK}
    assert found["neurons"], found
    for layer, neurons in found["neurons"].items():
        assert set(neurons) <= planted[layer], (layer, neurons)
    assert found["detect_layer"] >= DEFECT_BLOCK
    assert found["highest_layer"] == DEFECT_BLOCK
    assert found["k"] == sum(len(v) for v in found["neurons"].values())
    scores = [row["score"] for row in found["ranked"]]
    assert scores == sorted(scores, reverse=True)


def test_moving_them_removes_the_defect_on_held_out_images(demo, found, split):
    from sinder.defects.directions import defect_directions

    _, held = split
    ttr = TestTimeRegisters(demo.model, found["neurons"])
    result = compare_models(demo.model, ttr, defect_directions(demo.model)[-1], held, 224)
    assert result["before"]["defect_tokens"] > 0
    assert result["after"]["defect_tokens"] == 0 and result["after"]["high_norm_tokens"] == 0
    assert result["fidelity"]["patch_cosine"] > 0.99


def test_an_explicit_k_and_layers_are_obeyed(demo, split):
    train, _ = split
    images = [load_image(p, 112) for p in train[:3]]
    search = NeuronSearch(top_k=3, highest_layer=2, detect_layer=-1, sparsity_filter=False)
    found = find_register_neurons(demo.model, images, search)
    assert found["detect_layer"] == len(demo.model.blocks) - 1
    assert found["k"] == 3 and found["k_sweep"] == []
    assert all(layer <= 2 for layer in found["neurons"])


def test_no_outliers_means_no_neurons(demo, split):
    train, _ = split
    found = find_register_neurons(demo.model, [load_image(train[0], 112)], NeuronSearch(norm_threshold=1e9))
    assert found["neurons"] == {} and found["k"] == 0 and found["outlier_tokens"] == 0


def test_bad_search_settings_are_refused():
    with pytest.raises(ValueError, match="norm factor"):
        NeuronSearch(norm_factor=1.0)
    with pytest.raises(ValueError, match="top k"):
        NeuronSearch(top_k=0)


def test_every_doubling_of_k_is_tried_past_a_plateau(monkeypatch):
    from sinder.registers import neurons

    left = {1: 0.94, 2: 0.93, 4: 0.93, 8: 0.88, 16: 0.88, 32: 0.72, 64: 0.44}  # the entangled demo's sweep
    tried = []

    def share(registers, images, masks, layer, search):
        tried.append(registers.k)
        return left[registers.k]

    class Counted:
        def __init__(self, vit, chosen):
            self.k = sum(len(v) for v in chosen.values())

    monkeypatch.setattr(neurons, "_outlier_share", share)
    monkeypatch.setattr(neurons, "TestTimeRegisters", Counted)
    ranked = [(i % 3, i, 1.0 / (i + 1)) for i in range(100)]
    masks = [torch.ones(4, dtype=torch.bool)]
    k, sweep = neurons._choose_k(None, ranked, [None], masks, 6, NeuronSearch(), progress=False)
    assert tried == [1, 2, 4, 8, 16, 32, 64] and k == 64 and len(sweep) == 7
    left.update({32: 0.45})  # within the plateau of the best: the smaller k wins
    tried.clear()
    assert neurons._choose_k(None, ranked, [None], masks, 6, NeuronSearch(), progress=False)[0] == 32
