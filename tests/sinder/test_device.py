"""`--device` and `--precision`: resolution, defaults, and bad input named in one line before anything is written."""

import pytest
import torch

from sinder import device
from sinder.cli import main
from sinder.errors import SinderError


def test_default_is_cuda_when_torch_sees_it_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.resolve(None, "auto", "repair").device.type == expected
    assert device.resolve("cpu", "auto", "repair").precision == "fp32"  # CPU bf16 speed depends on the CPU
    assert device.resolve("cpu", "auto", "analyze").precision == "fp32"


def test_cpu_precisions():
    assert device.resolve("cpu", "bf16").dtype == torch.bfloat16
    with pytest.raises(SinderError, match=r"--precision fp16: the CPU cannot run it; available on cpu: fp32, bf16"):
        device.resolve("cpu", "fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_absent(spec):
    with pytest.raises(SinderError, match=rf"^--device {spec}: CUDA is not available .*available: cpu$"):
        device.resolve(spec)


def test_index_beyond_the_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    with pytest.raises(SinderError, match=r"--device cuda:2: there are 2 CUDA devices; available: cpu, cuda, cuda:0, cuda:1"):
        device.resolve("cuda:2")
    assert device.resolve("cuda:1").device == torch.device("cuda", 1)


def test_bf16_on_a_gpu_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    with pytest.raises(SinderError, match=r"--precision bf16: cuda:0 \(Tesla V100\) cannot run it; available on cuda:0: fp32, fp16"):
        device.resolve("cuda", "bf16")
    assert device.resolve("cuda", "auto", "repair").precision == "fp32"  # no bf16: the default falls back


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1"])
def test_not_a_device(spec):
    with pytest.raises(SinderError, match=rf"^--device {spec}:"):
        device.resolve(spec)


@pytest.mark.parametrize("command", [
    ["directions", "--demo"],
    ["analyze", "--demo", "--out", "{tmp}/a"],
    ["repair", "--demo", "--out", "{tmp}/r.pth"],
    ["export", "--demo", "--name", "x", "--model-repo", "{tmp}/repo"],
    ["build", "--demo", "--model-repo", "{tmp}/repo"],
])
def test_commands_refuse_a_missing_device_in_one_line_and_write_nothing(tmp_path, capsys, command):
    args = [a.format(tmp=tmp_path) for a in command] + ["--device", "cuda:7"]
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda:7" in err and "available: cpu" in err
    assert list(tmp_path.iterdir()) == []


def test_runtime_info_names_the_versions():
    info = device.resolve("cpu", "bf16").describe()
    assert info["device"] == "cpu" and info["precision"] == "bf16" and info["torch"] == torch.__version__
    assert "cuda" in info
