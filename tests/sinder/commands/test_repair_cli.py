import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sinder.cli import main
from sinder.repair import REPORT_NAME

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "repair"))
from toy_defect import toy_loaded  # noqa: E402  (the tiny defective model of the repair tests)


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((120, 130, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sinder repair: error:")
    for needle in needles:
        assert needle in err
    return err


def test_missing_images_folder(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    assert main(["repair", "--demo", "--images", str(missing), "--out", str(tmp_path / "m.pth")]) == 2
    _one_line_error(capsys, str(missing), "does not exist")
    assert not (tmp_path / "m.pth").exists()


def test_empty_images_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    assert main(["repair", "--demo", "--images", str(empty), "--out", str(tmp_path / "m.pth")]) == 2
    _one_line_error(capsys, str(empty), "no images")


def test_a_single_image_cannot_be_split(tmp_path, capsys):
    folder = _images(tmp_path / "one", 1)
    assert main(["repair", "--demo", "--images", str(folder), "--out", str(tmp_path / "m.pth")]) == 2
    _one_line_error(capsys, "at least 2 images")


def test_bad_option_values(tmp_path, capsys):
    folder = _images(tmp_path / "imgs", 3)
    args = ["repair", "--demo", "--images", str(folder), "--out", str(tmp_path / "m.pth")]
    assert main(args + ["--stop-fraction", "1.5"]) == 2
    _one_line_error(capsys, "stop fraction")
    assert main(args + ["--limit-layers", "0"]) == 2
    _one_line_error(capsys, "limit layers")


def test_checkpoint_needs_images(tmp_path, capsys):
    assert main(["repair", "--checkpoint", str(tmp_path / "m.pth"), "--out", str(tmp_path / "o.pth")]) == 2
    _one_line_error(capsys, "--images")


def test_missing_checkpoint(tmp_path, capsys):
    folder = _images(tmp_path / "imgs", 3)
    missing = tmp_path / "missing.pth"
    assert main(["repair", "--checkpoint", str(missing), "--images", str(folder),
                 "--out", str(tmp_path / "o.pth")]) == 2
    _one_line_error(capsys, "missing.pth")


def test_repair_run_writes_checkpoint_and_report(tmp_path, capsys, monkeypatch):
    from sinder.commands import repair as repair_cmd

    monkeypatch.setattr(repair_cmd, "load_from_args", lambda args: toy_loaded())
    folder = _images(tmp_path / "imgs", 5)
    out = tmp_path / "out" / "toy_sinder.pth"
    rc = main(["repair", "--checkpoint", str(tmp_path / "unused.pth"), "--images", str(folder), "--out", str(out),
               "--resolution", "112", "--max-iterations", "6", "--window", "10", "--lr", "0.01",
               "--held-out-fraction", "0.4", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.out and "iterations" in captured.out
    report = json.loads((out.parent / REPORT_NAME).read_text())
    assert report["iterations"] == 6 and report["options"]["lr"] == 0.01
    assert report["images"]["train"] == 3 and report["images"]["held_out"] == 2 and report["images"]["unreadable"] == 0
    assert report["runtime"]["device"] == "cpu" and report["runtime"]["precision"] == "fp32"
    assert "images/s" in captured.out
    assert set(torch.load(out, weights_only=True)) == set(toy_loaded().model.state_dict())


def test_demo_uses_the_bundled_photos(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SINDER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo_sinder.pth"
    rc = main(["repair", "--demo", "--out", str(out), "--resolution", "56", "--max-iterations", "2",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    assert report["synthetic"] is True and report["model"]["source"] == "demo:seed=0"
    assert report["images"]["train"] + report["images"]["held_out"] >= 10


def test_images_from_a_list_file_and_nested_folders(tmp_path, capsys, monkeypatch):
    from sinder.commands import repair as repair_cmd
    from sinder.repair.data import collect_images

    monkeypatch.setattr(repair_cmd, "load_from_args", lambda args: toy_loaded())
    _images(tmp_path / "set" / "a", 2)
    _images(tmp_path / "set" / "b" / "deeper", 2)
    Image.fromarray(np.zeros((130, 120, 3), np.uint8)).save(tmp_path / "set" / "b" / "x.webp")
    found = collect_images(tmp_path / "set")
    assert len(found) == 5 and any(p.suffix == ".webp" for p in found)
    listing = tmp_path / "train.txt"
    listing.write_text("# training set\n" + "\n".join(str(p.relative_to(tmp_path)) for p in found) + "\n")
    assert collect_images(listing) == found
    out = tmp_path / "out" / "m.pth"
    rc = main(["repair", "--checkpoint", str(tmp_path / "unused.pth"), "--images", str(listing), "--out", str(out),
               "--resolution", "112", "--max-iterations", "2", "--window", "10", "--no-progress", "--workers", "0"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out.parent / REPORT_NAME).read_text())["images"]["train"] + 2 >= 5


def test_out_of_memory_names_the_request_and_keeps_the_resume_file(tmp_path, capsys, monkeypatch):
    from sinder.commands import repair as repair_cmd
    from sinder.repair.train import RepairTrainer

    monkeypatch.setattr(repair_cmd, "load_from_args", lambda args: toy_loaded())
    folder = _images(tmp_path / "imgs", 5)
    out = tmp_path / "out" / "m.pth"
    real_step, calls = RepairTrainer.step, {"n": 0}

    def step(self, image):
        calls["n"] += 1
        if calls["n"] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity")
        return real_step(self, image)

    monkeypatch.setattr(RepairTrainer, "step", step)
    args = ["repair", "--checkpoint", str(tmp_path / "unused.pth"), "--images", str(folder), "--out", str(out),
            "--resolution", "112", "--max-iterations", "10", "--window", "10", "--save-every", "2",
            "--no-progress", "--workers", "0"]
    assert main(args) == 2
    err = _one_line_error(capsys, "out of memory", "2.50 GiB", "--precision bf16", "--resolution")
    resume = out.with_name(out.name + ".resume.pt")
    assert str(resume) in err and torch.load(resume, weights_only=True)["iteration"] == 2
    assert not out.exists()
