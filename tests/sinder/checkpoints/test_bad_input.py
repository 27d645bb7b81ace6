"""Bad checkpoints give one-line CheckpointErrors naming the file and the problem, and run no code."""

import json
import pickle
import zipfile

import pytest
import torch
from ckpt_factory import TINY, random_official
from safetensors.torch import save_file

from sinder.checkpoints import detect_format, load_model, read_state_dict, to_official
from sinder.errors import CheckpointError, SinderError


def fails(path, match, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


class _OpensAFile:
    """A pickle payload that creates ``marker`` if anything unpickles it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_missing_file(tmp_path):
    fails(tmp_path / "nope.pth", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    fails(tmp_path / "empty.pth", "empty file")


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    fails(tmp_path, "directory without a single checkpoint")


def test_text_file(tmp_path):
    (tmp_path / "readme.pth").write_text("these are not weights\n")
    fails(tmp_path / "readme.pth", "not a PyTorch or safetensors checkpoint")


def test_json_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 384}))
    fails(tmp_path / "config.json", "JSON")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_torch_file(tmp_path, keep):
    path = tmp_path / "cut.pth"
    torch.save(random_official(TINY), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    fails(path, "truncated or corrupt")


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in random_official(TINY).items()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fails(path, "truncated or corrupt safetensors")


def test_corrupt_zip_member(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save(random_official(TINY), path)
    data = bytearray(path.read_bytes())
    data[200:400] = b"\x00" * 200  # inside the pickle/tensor records, the archive directory intact
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_flipped_bytes_in_tensor_data(tmp_path):
    # torch itself does not check the zip CRCs; a damaged tensor would load as wrong weights.
    path = tmp_path / "flipped.pth"
    torch.save(random_official(TINY), path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))
    fails(path, "corrupt PyTorch checkpoint")


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    fails(tmp_path / "meta.pth", "not a state dict")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    fails(tmp_path / "list.pth", "not a state dict")


def test_unknown_layout_names_keys(tmp_path):
    torch.save({"encoder.conv1.weight": torch.ones(2), "fc.bias": torch.ones(2)}, tmp_path / "resnet.pth")
    message = fails(tmp_path / "resnet.pth", "unknown state-dict layout")
    assert "encoder.conv1.weight" in message
    with pytest.raises(CheckpointError):
        detect_format({"foo": torch.ones(1)})


def test_missing_block_key_is_named(tmp_path):
    sd = random_official(TINY)
    del sd["blocks.1.attn.qkv.bias"]
    torch.save(sd, tmp_path / "holes.pth")
    fails(tmp_path / "holes.pth", r"missing blocks\.1\.attn\.qkv\.bias")


def test_unexpected_key_is_named(tmp_path):
    sd = random_official(TINY) | {"blocks.0.attn.rope.freqs": torch.ones(4)}
    torch.save(sd, tmp_path / "extra.pth")
    fails(tmp_path / "extra.pth", r"unexpected blocks\.0\.attn\.rope\.freqs")


def test_wrong_arch_override_names_keys_and_shapes(tmp_path):
    torch.save(random_official(TINY), tmp_path / "tiny.pth")
    message = fails(tmp_path / "tiny.pth", "does not fit architecture 'vitb14'", arch="vitb14")
    assert "missing blocks.2." in message  # depth 12 against 2 blocks
    assert "cls_token 1x1x64 (expected 1x1x768)" in message


def test_wrong_shape_within_a_block_is_named(tmp_path):
    sd = random_official(TINY)
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(100, 64)
    torch.save(sd, tmp_path / "odd.pth")
    fails(tmp_path / "odd.pth", r"blocks\.1\.mlp\.fc1\.weight 100x64 \(expected 256x64\)")


def test_unknown_arch_name(tmp_path):
    torch.save(random_official(TINY), tmp_path / "tiny.pth")
    with pytest.raises(SinderError, match="unknown architecture 'vith14'"):
        load_model(tmp_path / "tiny.pth", arch="vith14")


def test_unknown_interpolation(tmp_path):
    torch.save(random_official(TINY), tmp_path / "tiny.pth")
    with pytest.raises(SinderError, match="unknown interpolation 'nearest'"):
        load_model(tmp_path / "tiny.pth", interpolation="nearest")


def test_hf_state_dict_with_stray_key(tmp_path):
    from sinder.checkpoints import official_to_hf

    hf = official_to_hf(random_official(TINY), TINY) | {"encoder.layer.0.attention.rotary.inv_freq": torch.ones(2)}
    save_file({k: v.contiguous() for k, v in hf.items()}, tmp_path / "model.safetensors")
    fails(tmp_path / "model.safetensors", r"unexpected keys encoder\.layer\.0\.attention\.rotary\.inv_freq")


def test_hf_state_dict_without_value_projection(tmp_path):
    from sinder.checkpoints import official_to_hf

    hf = official_to_hf(random_official(TINY), TINY)
    del hf["encoder.layer.1.attention.attention.value.weight"]
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1 lacks the value part"):
        to_official(hf, "hf")


@pytest.mark.parametrize("container", ["raw_pickle", "torch_zip"])
def test_malicious_pickle_is_refused_not_executed(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps({"evil": _OpensAFile(marker)}, protocol=2))
    else:
        torch.save({"cls_token": torch.zeros(1, 1, 4), "evil": _OpensAFile(marker)}, path)
        assert zipfile.is_zipfile(path)
    assert not marker.exists()
    message = fails(path, "refused to unpickle")
    assert "io.open" in message or "builtins.open" in message  # the global it refused, named
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


def test_pickled_module_is_refused(tmp_path):
    # SINDER's checkpoint_p75.pth / checkpoint.pth are torch.save(model): whole pickled modules.
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    message = fails(tmp_path / "module.pth", "refused to unpickle")
    assert "torch.nn.modules.linear.Linear" in message
