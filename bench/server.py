"""Start the service as a subprocess on a free loopback port, wait for readiness, stop it.

Shared by the benchmark and the slow tests (tests/service/stress): both drive a real
uvicorn process over loopback, as a client would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``python -m service`` on 127.0.0.1:<free port> with ``SINDER_*`` settings from ``env``.

    Use as a context manager; the process is stopped (SIGTERM, then SIGKILL after ``kill_after``)
    on exit. Its stdout and stderr go to ``log_path`` for the tests to read.
    """

    def __init__(self, model_repo: str | Path, env: dict[str, str] | None = None, port: int | None = None,
                 log_path: str | Path | None = None, python: str = sys.executable):
        self.model_repo = Path(model_repo)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self._log_file = None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="service-", suffix=".log")[1])
        self.python = python
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 120.0, wait_ready: bool = True) -> "ServiceProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [self.python, "-m", "service", "--model-repo", str(self.model_repo),
               "--host", "127.0.0.1", "--port", str(self.port)]
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        if wait_ready:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}/health/live", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"service not live after {timeout:.0f} s:\n{self.log_tail()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def rss_bytes(self) -> int:
        """Resident memory of the service process and its children (uvicorn may fork)."""
        import psutil

        p = psutil.Process(self.proc.pid)
        total = p.memory_info().rss
        for child in p.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, kill_after: float = 30.0) -> int | None:
        if not self.proc:
            return None
        self.terminate()
        try:
            self.proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def __enter__(self) -> "ServiceProcess":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
