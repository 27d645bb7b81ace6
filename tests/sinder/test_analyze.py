import json
import shutil

import pytest
import torch

from sinder import demo, demo_entangled
from sinder.analyze import run_analysis
from sinder.errors import ImageError

PHOTOS = ("moon.png", "rocket.jpg", "astronaut.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_photos_dir):
    src = demo_photos_dir
    dest = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copyfile(src / name, dest / name)
    return [dest / name for name in PHOTOS]


@pytest.fixture(scope="module")
def loaded():
    return demo.load_demo(0)


@pytest.fixture(scope="module")
def repaired():
    fixed = demo.load_demo(0)
    fc1 = fixed.model.blocks[demo.DEFECT_BLOCK].mlp.fc1
    u, s, vh = torch.linalg.svd(fc1.weight.detach().double(), full_matrices=False)
    s[0] = 0
    with torch.no_grad():
        fc1.weight.copy_((u * s) @ vh)
    fixed.source = "repaired-in-test"
    return fixed


def test_report_and_pictures(loaded, photos, tmp_path):
    out = tmp_path / "out"
    report = run_analysis(loaded, photos, out, progress=False)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["layers"] == report["layers"]
    assert report["images"] == 3
    assert report["model"]["arch"] == "vits14"
    assert report["model"]["source"] == "demo:seed=0"
    assert report["model"]["sha256"] == loaded.sha256
    assert report["model"]["synthetic"] is True and report["synthetic"] is True
    assert "SYNTHETIC" in report["note"]
    assert len(report["layers"]) == loaded.arch.depth
    for row in report["layers"]:
        assert set(row) >= {"index", "defect_fraction", "high_norm_fraction", "median_norm", "max_norm", "alignment"}
    assert report["first_defect_layer"] == demo.DEFECT_BLOCK
    assert report["layers"][-1]["alignment"] > 0.95
    assert [p["name"] for p in report["per_image"]] == list(PHOTOS)
    pictures = [out / report["pictures"]["layers"]] + [out / p for p in report["pictures"]["images"]]
    assert len(pictures) == 4
    for p in pictures:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    leftovers = [p for p in out.rglob(".*")]
    assert not leftovers


def _check_cls_attention(report: dict) -> dict:
    att = report["cls_attention"]
    assert "rule" in att and len(att["blocks"]) == len(report["layers"])
    for row in att["blocks"]:
        if row["cls_attention_share"] is not None:
            assert 0.0 <= row["cls_attention_share"] <= row["cls_attention_share_max_head"] <= 1.0, row
            assert 0.0 < row["high_norm_token_share"] < 0.5, row
    summary = att["after_first_defect"]
    assert summary["blocks"] and min(summary["blocks"]) > report["first_defect_layer"]
    assert summary["ratio"] == pytest.approx(summary["cls_attention_share"] / summary["high_norm_token_share"])
    return summary


def test_cls_attention_planted_defect_is_not_read(loaded, photos, tmp_path):
    # The planted demo's defect lives in channels no later weight reads: the CLS token gives the
    # high-norm tokens no more attention than their number explains.
    report = run_analysis(loaded, photos, tmp_path / "out", progress=False)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["cls_attention"] == report["cls_attention"]
    assert _check_cls_attention(report)["ratio"] < 1.0


def test_cls_attention_entangled_defect_is_read(photos, demo_photos_dir, tmp_path):
    # The entangled demo's high-norm tokens are attention sinks that later blocks read (moon and
    # rocket carry most of them; see tests/sinder/test_demo_entangled.py).
    report = run_analysis(demo.load_demo_kind("entangled", 0), photos[:2], tmp_path / "out", progress=False)
    assert report["first_defect_layer"] == demo_entangled.DEFECT_BLOCK
    assert _check_cls_attention(report)["ratio"] >= 1.5


def test_before_and_after(loaded, repaired, photos, tmp_path):
    report = run_analysis(loaded, photos, tmp_path / "out", repaired=repaired, progress=False)
    after = report["repaired"]
    assert after["model"]["source"] == "repaired-in-test"
    assert report["layers"][-1]["high_norm_tokens"] > 0
    assert after["layers"][-1]["high_norm_tokens"] == 0
    assert after["layers"][-1]["defect_tokens"] < 0.1 * report["layers"][-1]["defect_tokens"]
    assert after["first_defect_layer"] is None
    assert after["cls_attention"]["after_first_defect"] is None  # no high-norm token left to attend to


def test_unreadable_image_leaves_no_output(loaded, photos, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    with pytest.raises(ImageError, match="broken.png"):
        run_analysis(loaded, [photos[0], bad], out, progress=False)
    assert not (out / "report.json").exists()


def test_no_images(loaded, tmp_path):
    with pytest.raises(ImageError):
        run_analysis(loaded, [], tmp_path / "out", progress=False)


def test_image_picture_is_the_contract_picture_with_the_defect_rule_outlined():
    """`sinder analyze` draws with the renderer of /visualize (contract/pictures.py): the same look."""
    import io

    import numpy as np
    from PIL import Image

    from contract import pictures
    from sinder.analyze import _image_picture
    from sinder.defects.measure import defect_mask

    torch.manual_seed(0)
    direction = torch.zeros(8)
    direction[0] = 1.0
    spiky = torch.randn(8, 12, 8)
    spiky[1, 2] = direction * 500  # one defect token, huge and along the direction
    clean = torch.randn(8, 12, 8)
    image = torch.zeros(3, 112, 168)
    assert int(defect_mask(spiky.reshape(-1, 8), direction).sum()) >= 1
    png = _image_picture(image, [("original", spiky), ("repaired", clean)], "t", direction, synthetic=True)
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    cyan = (picture[..., 0] < 30) & (picture[..., 1] > 225) & (picture[..., 2] > 225)
    warn = (np.abs(picture.astype(int) - np.array(pictures._WARN)).sum(-1) < 40)
    assert cyan.sum() > 0 and warn.sum() > 200  # outlines, and the synthetic note
    one = np.asarray(Image.open(io.BytesIO(_image_picture(image, [("original", spiky)], "t", direction))))
    assert picture.shape[1] == one.shape[1] and picture.shape[0] > one.shape[0]
