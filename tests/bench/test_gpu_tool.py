"""The offline tool's part of the GPU check: runs on the CPU with a tiny shape, and says in one line
why it measures nothing where torch has no CUDA."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu_tool import render, tool_check

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_smoke_measures_both_precisions():
    out = tool_check(smoke=True, log=lambda m: None, budget_left=lambda: 600)
    assert not out.get("error") and not out["errors"], out
    assert {r["precision"] for r in out["rows"]} == {"bf16", "fp32"}
    for r in out["rows"]:
        assert r["iteration_s"] > 0 and r["projected_paper_run_hours"] == pytest.approx(30_000 * r["iteration_s"] / 3600)
        assert r["peak_memory_gib"] > 0 and r["estimated_gib"] > 0
    assert out["directions_s"]["tiny_smoke"] > 0
    text = "\n".join(render(out))
    assert "tiny_smoke 56 px | bf16" in text and "30k images" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_why_and_exits_1(tmp_path):
    out = tool_check(smoke=False, log=lambda m: None, budget_left=lambda: 600)
    assert "need CUDA" in out["error"] and "nothing measured" in out["error"] and not out["rows"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--only-tool", "--out", str(tmp_path / "g.json"),
                           "--report", str(tmp_path / "b.md")], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 1 and "need CUDA" in done.stderr
    assert "need CUDA" in json.loads((tmp_path / "g.json").read_text())["tool"]["error"]
    assert "Not measured: the tool's GPU figures need CUDA" in (tmp_path / "b.md").read_text()
