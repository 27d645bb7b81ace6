"""`sinder repair --dry-run`: the estimate against a measured iteration, and the command's output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinder.cli import main
from sinder.model import get_arch
from sinder.repair.estimate import estimate

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, sys
import torch
torch.set_num_threads(1)  # one thread, one malloc arena: the resident set then follows the tensors
from sinder.device import resolve
from sinder.model import ArchConfig
from sinder.repair.bench import measure_iteration
cfg = ArchConfig("probe", embed_dim=192, depth=4, num_heads=3)
print(json.dumps(measure_iteration(cfg, 448, limit_layers=4, compute=resolve("cpu", sys.argv[1]))))
"""


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
def test_estimate_matches_the_measured_peak_of_an_iteration(precision):
    # a fresh process, so that its peak resident set is this iteration's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MALLOC_ARENA_MAX": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, precision], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = r["estimated_rise_bytes"] / r["measured_rise_bytes"]
    assert 0.6 <= ratio <= 1.6, r


def test_estimate_scales_with_tokens_and_precision():
    small, large = (estimate(get_arch("vitl14"), res, 10) for res in (224, 518))
    assert large["memory_bytes"]["activations"] > 4 * small["memory_bytes"]["activations"]
    assert large["trainable_epsilon"] == 24 * 4 * 1024  # qkv (value rows), proj, fc1, fc2: rank 1024 each
    bf16 = estimate(get_arch("vitl14"), 518, 10, "bf16")
    assert bf16["memory_bytes"]["activations"] < large["memory_bytes"]["activations"]
    assert bf16["flops_per_iteration"] == large["flops_per_iteration"]


def test_dry_run_prints_without_training(tmp_path, capsys):
    out = tmp_path / "m.pth"
    assert main(["repair", "--demo", "--out", str(out), "--dry-run", "--device", "cpu", "--precision", "bf16"]) == 0
    text = capsys.readouterr().out
    for needle in ("vits14", "224 x 224", "trainable epsilon 18,432", "cpu bf16", "GiB estimated", "TFLOP"):
        assert needle in text
    assert not out.exists() and not list(tmp_path.iterdir())
