"""The observed defect direction beside the predicted one, and ``--direction``: a checkpoint whose
tokens show a defect is never reported clean, however it is parametrised."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sinder.defects.observed import AGREEMENT_MIN, LayerObservation, choose_directions, observe_from_gram

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reparam_factory import reparametrised_demo  # noqa: E402


def _obs(direction, n=10, coherence=0.95):
    return LayerObservation(n, None if direction is None else F.normalize(direction, dim=0), coherence)


def test_observed_direction_is_the_leading_direction_of_the_tokens():
    d = F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(0)), dim=0)
    tokens = 30 * d + 0.5 * torch.randn(20, 16, generator=torch.Generator().manual_seed(1))
    units = F.normalize(tokens, dim=-1)
    (obs,) = observe_from_gram([units.double().T @ units.double()], [20])
    assert abs(float(obs.direction @ d)) > 0.99 and obs.coherence > 0.9
    (few,) = observe_from_gram([units[:2].double().T @ units[:2].double()], [2])
    assert few.direction is None


def test_auto_keeps_an_explaining_prediction_and_replaces_one_that_misses():
    g = torch.Generator().manual_seed(0)
    predicted = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    other = F.normalize(torch.randn(8, generator=g), dim=0)
    explained = [_obs(None, n=0, coherence=None), _obs(predicted[1]), _obs(predicted[2])]
    choice = choose_directions(predicted, explained, "auto")
    assert choice.used == "predicted" and not choice.warnings and torch.equal(choice.directions, predicted)
    missed = [_obs(None, n=0, coherence=None), _obs(other), _obs(predicted[2])]
    choice = choose_directions(predicted, missed, "auto")
    assert choice.used == "observed" and choice.unexplained_layers == [1] and choice.warnings
    assert choice.sources == ["observed@1", "observed", "observed"]
    assert torch.allclose(choice.directions[1], other)
    kept = choose_directions(predicted, missed, "predicted")
    assert kept.used == "predicted" and kept.warnings, "predicted must still warn when it misses the tokens"
    incoherent = [_obs(None, n=0, coherence=None), _obs(other, coherence=0.1), _obs(predicted[2])]
    assert choose_directions(predicted, incoherent, "auto").used == "predicted"
    assert choice.record()["agreement_predicted_observed"][1] < AGREEMENT_MIN
    with pytest.raises(ValueError):
        choose_directions(predicted, None, "observed")
    assert not choose_directions(predicted, None, "auto").checked


def test_first_own_layer_skips_directions_borrowed_from_a_later_layer():
    g = torch.Generator().manual_seed(0)
    predicted = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    other = F.normalize(torch.randn(8, generator=g), dim=0)
    none = _obs(None, n=0, coherence=None)
    late = choose_directions(predicted, [none, none, _obs(other), none], "auto")
    assert late.sources == ["observed@2", "observed@2", "observed", "observed@2"]
    assert late.first_own_layer == 2  # layer 3 carries layer 2's direction forward: still the defect's
    assert choose_directions(predicted, [none, none, _obs(other), none], "predicted").first_own_layer == 0
    assert choose_directions(predicted, None, "auto").first_own_layer == 0


@pytest.fixture(scope="module")
def planted():
    from sinder.demo import load_demo

    return load_demo(0)


@pytest.fixture(scope="module")
def rotated():
    return reparametrised_demo()


def test_reparametrised_checkpoint_is_functionally_identical(planted, rotated, demo_photos_dir):
    from sinder.images import list_images, load_image

    model, q = rotated
    image = load_image(list_images(demo_photos_dir)[0], 224)
    with torch.no_grad():
        a, b = planted.model.block_outputs(image[None]), model.model.block_outputs(image[None])
    for x, y in zip(a, b):
        assert float((y.double() - x.double() @ q.T).norm() / x.norm()) < 1e-5


def test_reparametrised_checkpoint_is_never_called_clean(rotated, demo_photos_dir, tmp_path):
    from sinder.analyze import run_analysis
    from sinder.demo import DEFECT_BLOCK
    from sinder.images import list_images

    model, _ = rotated
    paths = list_images(demo_photos_dir)[:8]
    report = run_analysis(model, paths, tmp_path / "auto", progress=False)
    assert report["direction"]["used"] == "observed" and report["warnings"]
    assert report["first_defect_layer"] == DEFECT_BLOCK
    assert all(r["defect_tokens"] > 0 for r in report["layers"][DEFECT_BLOCK:])
    # The prediction alone misses the defect, and says so.
    report = run_analysis(model, paths, tmp_path / "predicted", progress=False, direction="predicted")
    assert report["first_defect_layer"] is None
    assert report["warnings"] and DEFECT_BLOCK in report["direction"]["unexplained_layers"]


def test_prediction_is_invariant_to_layerscale_but_not_to_the_layernorm_weight(planted):
    from sinder.defects.directions import defect_directions

    base = defect_directions(planted.model)
    moved = copy.deepcopy(planted.model)
    with torch.no_grad():
        for blk in moved.blocks:
            for ls, lin in ((blk.ls1, blk.attn.proj), (blk.ls2, blk.mlp.fc2)):
                lin.weight.mul_(ls.gamma[:, None])
                lin.bias.mul_(ls.gamma)
                ls.gamma.fill_(1.0)
    agree = (defect_directions(moved) * base).sum(dim=1).abs()
    assert (agree > 0.999).all()
    with torch.no_grad():
        for blk in moved.blocks:
            blk.mlp.fc1.weight.mul_(blk.norm2.weight[None, :])
            blk.norm2.weight.fill_(1.0)
    agree = (defect_directions(moved) * base).sum(dim=1).abs()
    assert (agree[5:] < 0.5).all(), "folding the LayerNorm weight into fc1 moves the planted demo's prediction"
