"""SINDER_WORKERS=2 on a real port: readiness and metrics across both processes, SIGTERM drains both."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from service_test_utils import b64, noise, png

ROOT = Path(__file__).resolve().parents[2]

# Every process (the spawned workers too) runs this at start: inference slowed so work is queued at SIGTERM.
SLOW = """
import time
import service.backends.onnx_runtime as ort_backend
_run = ort_backend.OnnxRuntimeBackend.run
def _slow(self, images):
    time.sleep(0.25)
    return _run(self, images)
ort_backend.OnnxRuntimeBackend.run = _slow
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_two_workers_share_readiness_metrics_and_drain(tiny_repo, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SLOW)
    port = _port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SINDER_", "PROMETHEUS_"))},
           "SINDER_WORKERS": "2", "SINDER_MAX_BATCH_SIZE": "1", "SINDER_MAX_QUEUE_DELAY_MS": "0",
           "SINDER_DRAIN_DELAY_S": "2.0", "SINDER_DRAIN_GRACE_S": "5", "SINDER_MODELS": "tiny", "SINDER_WARMUP": "false",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--model-repo", str(tiny_repo), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    body = {"images": [b64(png(noise(56, 56)))], "outputs": ["cls"]}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "workers did not become ready"
            time.sleep(0.1)
        # Each call opens a new connection: the kernel spreads them over both workers; every answer is the sum.
        for _ in range(6):
            assert httpx.post(f"{base}/features", json=body, timeout=10).status_code == 200
        scrapes = [httpx.get(f"{base}/metrics", timeout=5).text for _ in range(6)]
        assert all(_metric(s, 'sinder_images_total{model="tiny:1"}') == 6 for s in scrapes)
        assert all(_metric(s, "sinder_ready ") == 1 for s in scrapes)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            accepted = [pool.submit(httpx.post, f"{base}/features", json=body, timeout=20) for _ in range(6)]
            end = time.monotonic() + 20
            while _metric(httpx.get(f"{base}/metrics").text, "sinder_inflight_requests ") + sum(f.done() for f in accepted) < 6:
                assert time.monotonic() < end, "requests not admitted"
                time.sleep(0.01)
            terminated = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.7)  # both workers have seen it (readiness publishes every 0.5 s)
            ready = [httpx.get(f"{base}/health/ready", timeout=5) for _ in range(4)]
            late = httpx.post(f"{base}/features", json=body, timeout=5)
            results = [f.result() for f in accepted]
        proc.wait(timeout=20)
        exited_after = time.monotonic() - terminated
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stdout.read()
    assert all(r.status_code == 503 for r in ready), log
    assert late.status_code == 503, log
    assert [r.status_code for r in results] == [200] * 6, log  # nothing accepted is lost
    assert proc.returncode == 0 and exited_after < 2.0 + 5 + 5, log
    assert log.count("draining: readiness false") == 2, log
