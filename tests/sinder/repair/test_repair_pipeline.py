import json

import pytest
import torch

from sinder.errors import ImageError, SinderError
from sinder.defects.directions import defect_directions
from sinder.model import build_model
from sinder.repair import REPORT_NAME, RepairOptions, resume_path_for, run_repair

from toy_defect import GRID, TOY_ARCH, toy_loaded

OPTS = RepairOptions(resolution=14 * GRID, window=20, max_iterations=40, held_out_fraction=0.34)


def test_repair_removes_the_planted_defect_and_writes_a_strict_checkpoint(toy, image_paths, tmp_path):
    original_state = {k: v.clone() for k, v in toy.model.state_dict().items()}
    out = tmp_path / "out" / "toy_sinder.pth"
    repaired, report = run_repair(toy, image_paths[:4], image_paths[4:], out, OPTS, progress=False)

    before, after = report["before"], report["after"]
    assert before["high_norm_fraction"] > 0.03 and before["defect_fraction"] > 0.03  # 3 of 64 tokens
    assert after["high_norm_fraction"] < 0.1 * before["high_norm_fraction"]
    assert after["defect_fraction"] < before["defect_fraction"]
    assert report["fidelity"]["patch_cosine"] > 0.98 and report["fidelity"]["cls_cosine"] > 0.98
    assert 0 < report["iterations"] <= OPTS.max_iterations and report["seconds"] > 0
    assert report["synthetic"] is True and report["options"]["lr"] == OPTS.lr
    assert report["model"]["sha256"] == toy.sha256
    assert report["loss_search_from"] == 0  # predicted directions: every layer has its own, as in the reference

    on_disk = json.loads((out.parent / REPORT_NAME).read_text())
    assert on_disk["after"] == after and on_disk["output"]["sha256"] == repaired.sha256
    assert not resume_path_for(out).exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, REPORT_NAME])

    # plain tensors in the official layout: loads without unpickling objects, strictly, into a fresh model
    state = torch.load(out, weights_only=True)
    assert list(state) == list(original_state)
    fresh = build_model(TOY_ARCH)
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 112, 126, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["x_prenorm"], repaired.model(x)["x_prenorm"])
    # the provenance a build records is the same whether it has just repaired or loads the checkpoint back
    from sinder.checkpoints import load_model

    reloaded = load_model(out, arch=TOY_ARCH)
    assert repaired.source_format == reloaded.source_format == "official" and repaired.source == str(out)
    # the repaired model's directions were computed once, in the repair, and travel with it
    torch.testing.assert_close(repaired.directions.vectors, defect_directions(reloaded.model))

    # the input model is left as it was
    assert all(torch.equal(v, toy.model.state_dict()[k]) for k, v in original_state.items())


def test_bad_inputs(toy, image_paths, tmp_path):
    with pytest.raises(ImageError, match="held-out"):
        run_repair(toy, image_paths, [], tmp_path / "m.pth", OPTS, progress=False)
    with pytest.raises(ImageError, match="no training images"):
        run_repair(toy, [], image_paths, tmp_path / "m.pth", OPTS, progress=False)
    with pytest.raises(ImageError, match="also training"):
        run_repair(toy, image_paths[:3], image_paths[2:], tmp_path / "m.pth", OPTS, progress=False)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(ImageError, match="none of the 1 held-out images is readable.*broken.png"):
        run_repair(toy, image_paths, [broken], tmp_path / "m.pth", OPTS, progress=False)
    with pytest.raises(ImageError, match="broken.png"):  # --strict: the first unreadable image fails
        run_repair(toy, image_paths[:4] + [broken], image_paths[4:], tmp_path / "m.pth", OPTS, progress=False,
                   strict=True)
    with pytest.raises(SinderError, match="folder"):
        run_repair(toy, image_paths[:4], image_paths[4:], tmp_path, OPTS, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(SinderError, match="a_file"):
        run_repair(toy, image_paths[:4], image_paths[4:], a_file / "m.pth", OPTS, progress=False)
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / REPORT_NAME).exists()


def test_options_are_validated():
    with pytest.raises(SinderError, match="stop fraction"):
        RepairOptions(stop_fraction=1.5)
    with pytest.raises(SinderError, match="kernel"):
        RepairOptions(kernel=4)
    defaults = RepairOptions()
    assert (defaults.lr, defaults.momentum, defaults.mask_threshold, defaults.kernel, defaults.limit_layers,
            defaults.stop_fraction, defaults.resolution, defaults.window) == (0.005, 0.9, 4.0, 3, 10, 0.75, 518, 1000)


def test_interrupted_run_is_continued(image_paths, tmp_path, monkeypatch):
    from sinder.repair import train

    out = tmp_path / "m.pth"
    real_step = train.RepairTrainer.step
    calls = {"n": 0}

    def failing_step(self, image):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(self, image)

    monkeypatch.setattr(train.RepairTrainer, "step", failing_step)
    opts = RepairOptions(resolution=14 * GRID, window=20, max_iterations=8, save_every=2, held_out_fraction=0.34)
    with pytest.raises(KeyboardInterrupt):
        run_repair(toy_loaded(), image_paths[:4], image_paths[4:], out, opts, progress=False)
    assert resume_path_for(out).exists() and not out.exists()
    monkeypatch.setattr(train.RepairTrainer, "step", real_step)
    _, report = run_repair(toy_loaded(), image_paths[:4], image_paths[4:], out, opts, progress=False)
    assert report["resumed_from_iteration"] == 4 and report["iterations"] == 8


def test_unreadable_training_images_are_skipped_and_counted(toy, image_paths, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    out = tmp_path / "out" / "m.pth"
    _, report = run_repair(toy, image_paths[:4] + [broken], image_paths[4:], out, OPTS, progress=False)
    assert report["images"]["unreadable"] == 1 and list(report["images"]["unreadable_train"]) == [str(broken)]
    assert capsys.readouterr().err.count("skipping unreadable training image") == 1  # warned once, not per epoch
    assert report["throughput"]["images_per_s"] > 0 and report["memory"]["cpu_peak_rss_bytes"] > 0
    assert report["runtime"]["device"] == "cpu" and report["runtime"]["torch"] == torch.__version__


def test_no_readable_training_image_fails(toy, image_paths, tmp_path):
    broken = []
    for i in range(2):
        broken.append(tmp_path / f"broken{i}.png")
        broken[-1].write_bytes(b"not an image")
    with pytest.raises(SinderError, match="none of the 2 training images is readable"):
        run_repair(toy, broken, image_paths[4:], tmp_path / "m.pth", OPTS, progress=False)


def test_bf16_autocast_repair_removes_the_defect(toy, image_paths, tmp_path):
    from sinder.device import resolve

    _, report = run_repair(toy, image_paths[:4], image_paths[4:], tmp_path / "m.pth", OPTS, progress=False,
                           compute=resolve("cpu", "bf16"))
    assert report["runtime"]["precision"] == "bf16"
    assert report["after"]["high_norm_fraction"] < 0.1 * report["before"]["high_norm_fraction"]
    assert report["fidelity"]["patch_cosine"] > 0.98 and report["fidelity"]["cls_cosine"] > 0.98


def test_workers_stream_the_same_images(toy, image_paths, tmp_path):
    _, a = run_repair(toy, image_paths[:4], image_paths[4:], tmp_path / "a" / "m.pth", OPTS, progress=False)
    _, b = run_repair(toy_loaded(), image_paths[:4], image_paths[4:], tmp_path / "b" / "m.pth", OPTS,
                      progress=False, workers=1)
    assert a["iterations"] == b["iterations"] and a["after"] == b["after"]
