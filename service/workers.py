"""``SINDER_WORKERS`` > 1: that many independent service processes behind one listening socket.

The parent binds the port once and hands the socket to each worker (spawned, so each starts
clean); the kernel gives each new connection to whichever worker accepts first. Every worker
has its own model sessions, batcher and decoding threads (docs/workers.md says why this design
and not front ends feeding one inference process). Across workers:

- metrics: Prometheus multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, a fresh folder unless
  set); any worker's ``/metrics`` gives every worker's counts summed;
- readiness: ``service.core.peers``; true only when every worker is ready;
- SIGTERM/SIGINT to the parent: forwarded to every worker, each drains as a single process does
  (503 for new work during ``drain_delay_s``, then finishes what it accepted), the parent exits
  when all have; a worker that dies otherwise is started again;
- GPUs: worker ``i`` uses ``devices[i % len(devices)]`` (``SINDER_DEVICES``), else ``device_id``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from service.config import Settings

log = logging.getLogger("service.workers")
_RESTART_PAUSE_S = 1.0


def auto_workers(settings: Settings) -> int:
    """SINDER_WORKERS=0: one process per usable core (at most 8) when a GPU provider can run the
    models; one process on CPU, where onnxruntime already spreads each batch over every core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
    except ImportError:
        return 1
    gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    wants_gpu = any(p == "auto" or p in gpu for p in settings.providers)
    return min(cores, 8) if wants_gpu and available & gpu else 1


def worker_count(settings: Settings) -> int:
    return settings.workers or auto_workers(settings)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker_main(index: int, count: int, settings: Settings, sock: socket.socket, state: str) -> None:
    os.environ["SINDER_PEERS"] = f"{state}:{index}:{count}"
    if settings.devices:
        settings = settings.model_copy(update={"device_id": settings.devices[index % len(settings.devices)]})
    from service.__main__ import serve

    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s worker{index} %(name)s: %(message)s")
    serve(settings, sockets=[sock])


class Supervisor:
    def __init__(self, settings: Settings, count: int):
        self.settings = settings
        self.count = count
        self.state = tempfile.mkdtemp(prefix="sinder-workers-")
        self._own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
        self.metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(self.state, "metrics")
        self._ctx = mp.get_context("spawn")
        self._procs: dict[int, mp.Process] = {}
        self._stopping = False
        self._sock: socket.socket | None = None

    def _start(self, index: int, sock: socket.socket) -> None:
        proc = self._ctx.Process(target=_worker_main, name=f"sinder-worker-{index}",
                                 args=(index, self.count, self.settings, sock, self.state))
        proc.start()
        self._procs[index] = proc
        log.info("worker %d started (pid %d)", index, proc.pid)

    def _stop(self, signum, frame) -> None:
        if not self._stopping:
            log.info("signal %d: draining %d workers", signum, self.count)
        self._stopping = True
        if self._sock is not None:  # once the workers close theirs, new connections are refused, not left waiting
            self._sock.close()
            self._sock = None
        for proc in self._procs.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def run(self) -> int:
        Path(self.metrics_dir).mkdir(parents=True, exist_ok=True)
        for stale in Path(self.metrics_dir).glob("*.db"):  # counts of an earlier run must not be summed in
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        sock = self._sock = bind(self.settings.host, self.settings.port)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info("serving on http://%s:%d with %d worker processes", self.settings.host, sock.getsockname()[1], self.count)
        try:
            for i in range(self.count):
                self._start(i, sock)
            self._watch()
        finally:
            if self._sock is not None:
                self._sock.close()
            shutil.rmtree(self.state, ignore_errors=True)
            if self._own_metrics_dir:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return 0

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        while True:
            for index, proc in list(self._procs.items()):
                if proc.is_alive() or proc.exitcode is None:
                    continue
                multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
                if self._stopping:
                    del self._procs[index]
                    continue
                log.error("worker %d (pid %d) exited with %s; starting it again", index, proc.pid, proc.exitcode)
                time.sleep(_RESTART_PAUSE_S)
                if self._sock is not None:
                    self._start(index, self._sock)
            if self._stopping and not self._procs:
                return
            time.sleep(0.1)
