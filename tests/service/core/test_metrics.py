"""``sinder_model_info`` reads the same in one process and summed over ``SINDER_WORKERS`` processes: per
(model, version, provider, state), how many processes have that model version in that state; a state left reads 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from service.core.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
LOADING = ("tiny", "1", "none", "loading")
READY = ("tiny", "1", "CPUExecutionProvider", "ready")
FAILED = ("tiny", "2", "none", "failed")

# One "worker": a fresh process in multiprocess mode that goes through the given model-info steps, then
# prints its pid and (asked to) what its /metrics would answer.
WORKER = """
import json, os, sys
from service.core.metrics import Metrics
m = Metrics()
for step in json.loads(sys.argv[1]):
    m.set_model_info([tuple(labels) for labels in step])
print(os.getpid())
if sys.argv[2] == "render":
    sys.stdout.write(m.render().decode())
"""


def _model_info(text: str) -> dict[tuple[str, ...], float]:
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "sinder_model_info"]
    return {tuple(s.labels[k] for k in ("model", "version", "provider", "state")): s.value for s in family.samples}


def _worker(metrics_dir: Path, steps: list, render: bool = False) -> tuple[int, str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(steps), "render" if render else "-"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    pid, _, text = out.partition("\n")
    return int(pid), text


def test_single_process_keeps_the_state_left_behind_at_zero():
    metrics = Metrics()
    metrics.set_model_info([LOADING])
    assert _model_info(metrics.render().decode()) == {LOADING: 1}
    metrics.set_model_info([READY, FAILED])
    assert _model_info(metrics.render().decode()) == {LOADING: 0, READY: 1, FAILED: 1}


def test_workers_are_counted_per_state_and_a_dead_one_drops_out(tmp_path):
    ready_a, _ = _worker(tmp_path, [[LOADING], [READY]])
    still_loading, _ = _worker(tmp_path, [[LOADING, FAILED]])
    ready_c, _ = _worker(tmp_path, [[LOADING], [READY, FAILED]])
    # One worker still loading, two ready, two where version 2 failed; the first worker's LOADING reads 0, not 1.
    _, text = _worker(tmp_path, [], render=True)
    assert _model_info(text) == {LOADING: 1, READY: 2, FAILED: 2}
    multiprocess.mark_process_dead(still_loading, str(tmp_path))
    multiprocess.mark_process_dead(ready_c, str(tmp_path))
    _, text = _worker(tmp_path, [], render=True)
    assert _model_info(text) == {LOADING: 0, READY: 1}
