"""SIGTERM on a real uvicorn process: accepted requests finish with full results, new ones get 503,
readiness drops, and the process exits within its grace period."""

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

# The real entry point, with inference slowed down so that work is queued when SIGTERM arrives.
LAUNCH = """
import sys, time
import service.backends.onnx_runtime as ort_backend
run = ort_backend.OnnxRuntimeBackend.run
def slow(self, images):
    time.sleep(0.25)
    return run(self, images)
ort_backend.OnnxRuntimeBackend.run = slow
from service.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_admitted(http: httpx.Client, base: str, requests: list, timeout_s: float = 20.0) -> None:
    """Until every request is in flight in the service or already answered (0.25 s each, one at a time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = http.get(f"{base}/metrics").text
        inflight = next(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("sinder_inflight_requests "))
        if inflight + sum(f.done() for f in requests) >= len(requests):
            return
        time.sleep(0.01)
    raise AssertionError("the requests were not admitted in time")


def test_sigterm_drains_then_exits(tiny_repo):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SINDER_")},
           "SINDER_MAX_BATCH_SIZE": "1", "SINDER_MAX_QUEUE_DELAY_MS": "0", "SINDER_DRAIN_DELAY_S": "1.0",
           "SINDER_DRAIN_GRACE_S": "5", "SINDER_MODELS": "tiny", "SINDER_WARMUP": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--model-repo", str(tiny_repo), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("service did not become ready")
            time.sleep(0.05)

        body = {"images": [b64(png(noise(56, 56)))], "outputs": ["cls", "patch_tokens"]}
        with concurrent.futures.ThreadPoolExecutor(6) as pool, httpx.Client(timeout=20) as http:
            accepted = [pool.submit(http.post, f"{base}/features", json=body) for _ in range(5)]
            _wait_until_admitted(http, base, accepted)
            terminated = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            ready = http.get(f"{base}/health/ready")
            late = http.post(f"{base}/features", json=body)
            results = [f.result() for f in accepted]
        proc.wait(timeout=15)
        exited_after = time.monotonic() - terminated
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stdout.read()

    assert late.status_code == 503 and late.json()["error"]["type"] == "unavailable", log
    assert ready.status_code == 503 and "draining" in ready.json()["reasons"]
    for response in results:
        assert response.status_code == 200, log
        assert response.json()["results"][0]["grid"] == [4, 4]
    assert proc.returncode in (0, -signal.SIGTERM), log  # uvicorn re-raises the signal after a clean shutdown
    assert exited_after < 1.0 + 5 + 3, log
    assert "draining" in log
