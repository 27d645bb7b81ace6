import os
import signal
from dataclasses import replace

import pytest
import torch

from sinder.defects.directions import defect_directions
from sinder.errors import SinderError
from sinder.repair.options import RepairOptions
from sinder.repair.svd import apply_svd, block_epsilons, named_epsilons
from sinder.repair.train import RepairTrainer, epoch_order, load_train_image, read_resume

from toy_defect import DEFECT_BLOCK, GRID, TOY_ARCH, make_toy_model

RES = 14 * GRID
OPTS = RepairOptions(resolution=RES, window=20, save_every=2, max_iterations=6)


def _trainer(paths, options=OPTS, resume_file=None, fingerprint=None, loader=load_train_image):
    model = make_toy_model()
    directions = defect_directions(model)
    apply_svd(model)
    return RepairTrainer(model, directions, paths, options, resume_file=resume_file,
                         fingerprint=fingerprint or {"model": "toy"}, progress=False, image_loader=loader)


def _eps(trainer):
    return {k: v.detach().clone() for k, v in named_epsilons(trainer.model).items()}


@pytest.mark.parametrize("limit", [1, 2])
def test_gradients_reach_only_the_window_up_to_the_defect_layer(image_paths, limit):
    trainer = _trainer(image_paths, replace(OPTS, limit_layers=limit))
    frozen_before = {k: v.clone() for k, v in trainer.model.state_dict().items() if not k.endswith("epsilon")}
    result = trainer.step(load_train_image(image_paths[0], RES))
    assert result.layer == DEFECT_BLOCK and result.stepped
    window = set(range(DEFECT_BLOCK - limit + 1, DEFECT_BLOCK + 1))
    for i, params in enumerate(block_epsilons(trainer.model)):
        moved = [bool(p.detach().abs().sum() > 0) for p in params]
        assert all(moved) if i in window else not any(moved), (i, moved)
    assert [n for n, p in trainer.model.named_parameters() if p.requires_grad] == list(trainer.eps)
    # buffers (frozen weights, U, S, Vh, biases) never change
    after = trainer.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen_before.items())


def test_query_and_key_weights_stay_fixed(image_paths, tmp_path):
    trainer = _trainer(image_paths, replace(OPTS, max_iterations=4))
    original = make_toy_model()
    trainer.run()
    c = TOY_ARCH.embed_dim
    qkv = trainer.model.blocks[DEFECT_BLOCK].attn.qkv
    w = qkv.effective_weight()
    w0 = original.blocks[DEFECT_BLOCK].attn.qkv.weight
    assert torch.equal(w[: 2 * c], w0[: 2 * c])
    assert not torch.equal(w[2 * c :], w0[2 * c :])


def test_resume_equals_an_uninterrupted_run(image_paths, tmp_path):
    full = _trainer(image_paths)
    full.run()

    resume_file = tmp_path / "out.pth.resume.pt"
    first = _trainer(image_paths, replace(OPTS, max_iterations=3), resume_file=resume_file)
    first.run()
    state = torch.load(resume_file, weights_only=True)
    assert state["iteration"] == 3

    second = _trainer(image_paths, resume_file=resume_file)
    assert second.try_resume("require")
    assert second.iteration == 3
    second.run()
    assert second.iteration == full.iteration == 6
    a, b = _eps(full), _eps(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(second.history) == list(full.history)
    opt_a, opt_b = full.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert opt_a.keys() == opt_b.keys()
    assert all(torch.equal(opt_a[k]["momentum_buffer"], opt_b[k]["momentum_buffer"]) for k in opt_a)


def test_ctrl_c_finishes_the_iteration_and_leaves_a_valid_resume_file(image_paths, tmp_path):
    full = _trainer(image_paths)
    full.run()

    calls = {"n": 0}

    def loader(path, resolution):
        calls["n"] += 1
        if calls["n"] == 4:  # a Ctrl-C arrives while the 4th image is being prepared
            os.kill(os.getpid(), signal.SIGINT)
        return load_train_image(path, resolution)

    resume_file = tmp_path / "out.pth.resume.pt"
    interrupted = _trainer(image_paths, resume_file=resume_file, loader=loader)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    state = read_resume(resume_file)
    assert state is not None and state["iteration"] == 4  # the interrupted iteration was completed

    resumed = _trainer(image_paths, resume_file=resume_file)
    assert resumed.try_resume("auto")
    resumed.run()
    a, b = _eps(full), _eps(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_file_of_another_run(image_paths, tmp_path, capsys):
    resume_file = tmp_path / "out.pth.resume.pt"
    _trainer(image_paths, replace(OPTS, max_iterations=2), resume_file=resume_file).run()
    other = _trainer(image_paths, replace(OPTS, lr=0.01), resume_file=resume_file, fingerprint={"model": "other"})
    assert other.try_resume("auto") is False
    assert "ignoring resume file" in capsys.readouterr().err
    with pytest.raises(SinderError, match="different model"):
        other.try_resume("require")
    assert other.try_resume("never") is False
    resume_file.write_bytes(b"not a checkpoint")
    with pytest.raises(SinderError, match="unreadable"):
        other.try_resume("require")


def test_stopping_rule_counts_clean_images_in_the_window(image_paths):
    # A threshold nothing reaches: every image is clean, so the prefilled window of 8 "defective"
    # entries needs 6 clean iterations to reach 75%.
    trainer = _trainer(image_paths, replace(OPTS, mask_threshold=1e6, window=8, max_iterations=100))
    result = trainer.run()
    assert result.stopped_early and result.iterations == 6 and result.steps == 0
    assert trainer.clean_fraction() == 0.75


def test_epoch_limit_and_order(image_paths):
    trainer = _trainer(image_paths, replace(OPTS, max_iterations=100, max_epochs=2, mask_threshold=1e6,
                                            window=1000))
    assert trainer.run().iterations == 2 * len(image_paths)
    order = epoch_order(10, seed=3, epoch=1)
    assert sorted(order) == list(range(10)) and order == epoch_order(10, seed=3, epoch=1)
    assert order != epoch_order(10, seed=3, epoch=2)


def test_training_crop_is_square(image_paths):
    img = load_train_image(image_paths[0], RES)
    assert img.shape == (3, RES, RES)


def test_loss_waits_for_the_first_layer_with_its_own_defect_direction(demo_photos_dir):
    """A re-parametrised checkpoint (tests/sinder/defects/reparam_factory.py) gets observed directions,
    borrowed back from the defect layer before it; the paper's relative mask flags the tail of |cos|
    there on tokens that are not high-norm, so the loss must not be taken before the defect layer."""
    import copy
    import sys
    from pathlib import Path

    from sinder.demo import DEFECT_BLOCK
    from sinder.device import resolve
    from sinder.images import list_images
    from sinder.repair.pipeline import _choose_directions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "defects"))
    from reparam_factory import reparametrised_demo

    loaded, _ = reparametrised_demo()
    paths = {p.name: p for p in list_images(demo_photos_dir)}
    options = RepairOptions(resolution=224)
    observe_on = [paths[n] for n in ("brick.png", "ihc.png", "moon.png", "rocket.jpg", "coins.png", "retina.jpg")]
    choice = _choose_directions(loaded, defect_directions(loaded.model), observe_on, options,
                                resolve("cpu", "fp32"))
    assert choice.used == "observed" and choice.first_own_layer == DEFECT_BLOCK
    model = copy.deepcopy(loaded.model)
    apply_svd(model)
    # On both the mask flags tokens before the defect layer; on brick the defect layer has fewer
    # than skip_less_than flagged tokens (a clean image), on ihc enough for the loss.
    for name, fixed in (("brick.png", None), ("ihc.png", DEFECT_BLOCK)):
        image = load_train_image(paths[name], 224)
        early = RepairTrainer(copy.deepcopy(model), choice.directions, [paths[name]], options,
                              progress=False).step(image)
        assert early.layer is not None and early.layer < DEFECT_BLOCK
        trainer = RepairTrainer(copy.deepcopy(model), choice.directions, [paths[name]], options, progress=False,
                                first_loss_layer=choice.first_own_layer)
        assert trainer.step(image).layer == fixed
    with pytest.raises(ValueError, match="first loss layer"):
        RepairTrainer(model, choice.directions, [paths[name]], options, first_loss_layer=len(model.blocks))
