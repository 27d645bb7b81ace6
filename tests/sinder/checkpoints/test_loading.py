"""Reading files of every supported kind and container, and loading them into a model."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from ckpt_factory import TINY, random_official
from safetensors.torch import save_file

from sinder.checkpoints import (default_interpolation, detect_format, load_model, official_to_hf, read_state_dict,
                                save_official, to_official)
from sinder.model import build_model, get_arch


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def sd():
    return random_official(TINY, seed=5)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    # DINOv2 training: teacher_checkpoint.pth holds {"teacher": {"backbone.*", "dino_head.*", ...}}
    lambda sd: {"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, "dino_head.mlp.0.weight": torch.ones(2, 2)}},
    # the full trainer checkpoint holds student and teacher; the teacher is what DINOv2 releases
    lambda sd: {"model": {**{f"student.backbone.{k}": v + 1 for k, v in sd.items()},
                          **{f"teacher.backbone.{k}": v for k, v in sd.items()}}, "iteration": 10},
    # block_chunks=4 in training: blocks.<chunk>.<global index>.*
    lambda sd: {k.replace("blocks.1.", "blocks.3.1.").replace("blocks.0.", "blocks.0.0."): v for k, v in sd.items()},
], ids=["plain", "model", "state_dict+module", "teacher+backbone", "student+teacher", "chunked"])
def test_containers_and_prefixes_are_unwrapped(tmp_path, sd, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(sd), path)
    raw = read_state_dict(path)
    fmt = detect_format(raw)
    assert fmt == "official"
    assert_same(to_official(raw, fmt), sd)


def test_official_file_loads_with_defaults(tmp_path, sd):
    path = tmp_path / "dinov2_custom_pretrain.pth"
    torch.save(sd, path)
    loaded = load_model(path)
    assert loaded.source_format == "official"
    assert loaded.arch.name == "custom" and loaded.arch.embed_dim == 64 and loaded.arch.depth == 2
    assert loaded.arch.interpolation == "official"
    assert loaded.model.interpolation == "official"
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.source == str(path)
    assert_same({k: v for k, v in loaded.model.state_dict().items()}, sd)
    assert not loaded.model.training


def test_interpolation_argument_overrides(tmp_path, sd):
    path = tmp_path / "ckpt.pth"
    torch.save(sd, path)
    loaded = load_model(path, interpolation="hf")
    assert loaded.arch.interpolation == "hf" and loaded.model.interpolation == "hf"


def test_register_checkpoints_default_to_antialias(tmp_path):
    # The official *_reg models run with interpolate_antialias=True, interpolate_offset=0.
    arch = TINY.with_(num_register_tokens=4)
    path = tmp_path / "reg.pth"
    torch.save(random_official(arch), path)
    loaded = load_model(path)
    assert loaded.arch.num_register_tokens == 4
    assert loaded.arch.interpolation == "antialias"
    assert default_interpolation("hf", 0) == "hf"
    assert default_interpolation("official", 0) == "official"


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_hf_safetensors_and_bin_files(tmp_path, sd, suffix):
    hf = {k: v.contiguous() for k, v in official_to_hf(sd, TINY).items()}
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(hf, path)
    else:
        torch.save({f"dinov2.{k}": v for k, v in hf.items()} | {"classifier.weight": torch.zeros(3, 128)}, path)
    loaded = load_model(path)
    assert loaded.source_format == "hf"
    assert loaded.arch.interpolation == "hf"
    assert_same(loaded.model.state_dict(), sd)


def test_hf_folder_uses_config_head_count(tmp_path):
    # 128 wide would be guessed as 2 heads of 64; config.json says 4.
    arch = TINY.with_(embed_dim=128, num_heads=4)
    sd = random_official(arch)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in official_to_hf(sd, arch).items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "num_attention_heads": 4}))
    loaded = load_model(folder)
    assert loaded.arch.num_heads == 4
    assert loaded.sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_safetensors_named_bin_is_sniffed(tmp_path, sd):
    path = tmp_path / "weights.bin"
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    assert detect_format(read_state_dict(path)) == "official"


def test_sinder_svd_parametrisation_is_folded(tmp_path, sd):
    """haoqiwang/sinder's SVDLinearAddition(QKV) state: U, S, Vt, epsilon (qkv split in q, k, v)."""
    svd = {}
    expected = dict(sd)
    g = torch.Generator().manual_seed(0)
    for k, v in sd.items():
        if not (k.endswith(".weight") and v.ndim == 2 and k.startswith("blocks.")):
            svd[k] = v
            continue
        base = k[: -len(".weight")]
        parts = v.chunk(3, dim=0) if base.endswith("qkv") else [v]
        tags = ["_q", "_k", "_v"] if base.endswith("qkv") else [""]
        rebuilt = []
        for tag, w in zip(tags, parts):
            u, s, vt = torch.linalg.svd(w, full_matrices=False)
            eps = 0.01 * torch.randn(s.shape, generator=g) if tag in ("", "_v") else torch.zeros_like(s)
            svd.update({f"{base}.U{tag}": u, f"{base}.S{tag}": s, f"{base}.Vt{tag}": vt, f"{base}.epsilon{tag}": eps})
            rebuilt.append(u @ torch.diag(s + eps) @ vt)
        expected[k] = torch.cat(rebuilt)
    path = tmp_path / "sinder_svd.pth"
    torch.save(svd, path)
    assert detect_format(read_state_dict(path)) == "sinder"
    loaded = load_model(path)
    assert loaded.source_format == "sinder"
    assert loaded.arch.interpolation == "official_antialias"  # what the SINDER reference code runs
    got = loaded.model.state_dict()
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-5), k


def test_arch_override_by_name(tmp_path):
    arch = get_arch("vits14").with_(depth=12)
    sd = random_official(arch)
    path = tmp_path / "s.pth"
    torch.save(sd, path)
    assert load_model(path).arch.name == "vits14"
    assert load_model(path, arch="vits14").arch.name == "vits14"


def test_save_official_round_trip(tmp_path, sd):
    model = build_model(TINY)
    model.load_state_dict(sd)
    path = save_official(model, tmp_path / "out" / "repaired.pth")
    assert [p.name for p in path.parent.iterdir()] == ["repaired.pth"]  # no temp file left behind
    plain = torch.load(path, map_location="cpu", weights_only=True)
    assert type(plain) is dict and all(type(v) is torch.Tensor for v in plain.values())
    assert_same(plain, sd)
    # the official facebookresearch/dinov2 key names, which its strict load requires
    block = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"}
    official = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
                "norm.weight", "norm.bias"} | {f"blocks.{i}.{k}" for i in range(2) for k in block}
    assert set(plain) == official


def test_save_official_converts_hf_state_dicts(tmp_path, sd):
    path = save_official(official_to_hf(sd, TINY), tmp_path / "x.pth")
    assert_same(torch.load(path, weights_only=True), sd)


def test_arch_override_by_config(tmp_path, sd):
    # A width of 64 would be guessed as one head; a caller that knows better passes the ArchConfig.
    path = tmp_path / "tiny.pth"
    torch.save(sd, path)
    arch = TINY.with_(num_heads=4, name="demo")
    loaded = load_model(path, arch=arch)
    assert loaded.arch.num_heads == 4 and loaded.arch.name == "demo"
    assert loaded.model.blocks[0].attn.num_heads == 4


def test_sharded_safetensors_folder(tmp_path, sd):
    hf = {k: v.contiguous() for k, v in official_to_hf(sd, TINY).items()}
    keys = sorted(hf)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: hf[k] for k in part}, tmp_path / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = load_model(tmp_path)
    assert loaded.source_format == "hf"
    assert_same(loaded.model.state_dict(), sd)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_large_checkpoints_load_without_a_second_copy(tmp_path, sd, suffix):
    """The model's weights are views of one memory map of the file, not copies of it."""
    path = tmp_path / f"model{suffix}"
    contiguous = {k: v.contiguous() for k, v in sd.items()}
    save_file(contiguous, str(path)) if suffix == ".safetensors" else torch.save(contiguous, path)
    loaded = load_model(path, arch=TINY)
    assert_same(loaded.model.state_dict(), contiguous)
    ptr = loaded.model.blocks[0].attn.qkv.weight.data_ptr()
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    spans = []
    for line in maps.read_text().splitlines():
        if line.endswith(str(path)):
            lo, hi = line.split()[0].split("-")
            spans.append((int(lo, 16), int(hi, 16)))
    assert any(lo <= ptr < hi for lo, hi in spans), "the weight is not a view of the file's memory map"
