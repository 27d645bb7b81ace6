"""The synthetic ONNX ViT used by the bench and the GPU check follows the model-repository contract."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from contract import defects

from bench.onnx_vit import Shape, build_vit_onnx, flops_per_image, write_model

TINY = Shape("tiny", embed_dim=32, depth=2, num_heads=4)


def _run(model, images):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": images})))


@pytest.mark.parametrize("hw", [(56, 84), (112, 70)])
def test_outputs_follow_the_contract_for_any_grid(hw):
    model, direction = build_vit_onnx(TINY, "fp32", seed=1)
    images = np.random.default_rng(0).integers(0, 256, (3, *hw, 3), dtype=np.uint8)
    out = _run(model, images)
    gh, gw = hw[0] // 14, hw[1] // 14
    assert out["cls_token"].shape == (3, 32) and out["cls_token"].dtype == np.float32
    assert out["patch_tokens"].shape == (3, gh, gw, 32)
    assert out["token_norms"].shape == out["defect_alignment"].shape == out["defect_mask"].shape == (3, gh, gw)
    assert out["defect_mask"].dtype == np.bool_
    a = out["defect_alignment"].reshape(3, -1)
    np.testing.assert_array_equal(out["defect_mask"].reshape(3, -1), np.stack([defects.defect_mask(x) for x in a]))
    assert np.all((a >= 0) & (a <= 1 + 1e-5))
    # images are independent: the batch does not leak between them
    single = _run(model, images[1:2])
    np.testing.assert_allclose(single["patch_tokens"][0], out["patch_tokens"][1], atol=1e-5)


def test_fp16_outputs_and_closeness_to_fp32():
    m32, _ = build_vit_onnx(TINY, "fp32", seed=2)
    m16, _ = build_vit_onnx(TINY, "fp16", seed=2)
    images = np.random.default_rng(1).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    a, b = _run(m32, images), _run(m16, images)
    assert b["patch_tokens"].dtype == np.float16 and b["token_norms"].dtype == np.float32
    x = a["patch_tokens"].reshape(-1, 32).astype(np.float64)
    y = b["patch_tokens"].reshape(-1, 32).astype(np.float64)
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert cos.mean() > 0.999


def test_write_model_lays_out_a_repository_folder(tmp_path):
    dest = write_model(tmp_path, "m", TINY, max_batch_size=4)
    assert dest == tmp_path / "m" / "1"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["max_batch_size"] == 4
    assert len(manifest["defect"]["direction"]) == 32
    assert {o["name"] for o in manifest["outputs"]} == {"cls_token", "patch_tokens", "token_norms", "defect_alignment", "defect_mask"}
    cfg = (tmp_path / "m" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cfg and "max_batch_size: 4" in cfg
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]


def test_flops_grow_with_resolution_and_width():
    s = Shape("s", 384, 12, 6)
    # ViT-S/14 at 224: 257 tokens, 12 blocks of 12 n C^2 + 2 n^2 C multiply-adds: about 6.1 G
    assert 11.5e9 < flops_per_image(s, 224) < 12.8e9
    assert flops_per_image(s, 448) > 4 * flops_per_image(s, 224)
