import json
import shutil

import pytest
import torch

from sinder import demo
from sinder.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_photos_dir):
    src = demo_photos_dir
    dest = tmp_path_factory.mktemp("photos")
    for name in ("moon.png", "rocket.jpg"):
        shutil.copyfile(src / name, dest / name)
    return dest


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err
    return err


def test_analyze_demo(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "--demo", "--images", str(photos), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 2 and report["synthetic"] is True
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed
    share = report["cls_attention"]["after_first_defect"]
    assert f"{100 * share['cls_attention_share']:.1f}% of it on" in printed and f"{share['ratio']:.2f}x" in printed


def test_analyze_with_repaired_checkpoint(photos, tmp_path):
    fixed = demo.load_demo(0).model
    fc1 = fixed.blocks[demo.DEFECT_BLOCK].mlp.fc1
    u, s, vh = torch.linalg.svd(fc1.weight.detach().double(), full_matrices=False)
    s[0] = 0
    with torch.no_grad():
        fc1.weight.copy_((u * s) @ vh)
    ckpt = tmp_path / "repaired.pth"
    torch.save(fixed.state_dict(), ckpt)
    out = tmp_path / "out"
    assert main(["analyze", "--demo", "--images", str(photos), "--out", str(out), "--repaired", str(ckpt),
                 "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["repaired"]["layers"][-1]["high_norm_tokens"] == 0
    assert report["repaired"]["model"]["source"].endswith("repaired.pth")


def test_analyze_bad_inputs(photos, tmp_path, capsys):
    assert main(["analyze", "--demo", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", "--demo", "--images", str(empty), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "empty")
    assert main(["analyze", "--checkpoint", str(tmp_path / "missing.pth"), "--images", str(photos),
                 "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "missing.pth")
    assert main(["analyze", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--images")
    assert not (tmp_path / "o").exists()


def test_directions_demo(tmp_path, capsys):
    out = tmp_path / "dirs.json"
    assert main(["directions", "--demo", "--out", str(out)]) == 0
    brief = json.loads(capsys.readouterr().out)
    full = json.loads(out.read_text())
    assert len(full["layers"]) == 12 and len(full["layers"][0]["direction"]) == 384
    assert "direction" not in brief["layers"][0]
    defect = demo.private_channels(0).defect
    assert brief["layers"][-1]["top_channels"][0]["channel"] == defect
    assert brief["synthetic"] is True


def test_directions_bad_samples(capsys):
    assert main(["directions", "--demo", "--samples", "-3"]) == 2
    _one_line_error(capsys, "--samples")
