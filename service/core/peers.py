"""Readiness shared by the worker processes behind one port: one small file per worker.

With ``SINDER_WORKERS`` > 1, any worker may answer ``/health/ready``, and the answer must be
true only when every worker is ready (a balancer that sees "ready" may send work to any of
them). Each worker writes its own readiness, with its pid, to ``<folder>/<index>`` whenever it
changes and at least every ``REFRESH_S``; a worker reads the others' files and counts a file
that is missing, stale, or whose pid is gone as "not ready".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

REFRESH_S = 0.5
STALE_S = 5.0


class Peers:
    def __init__(self, folder: str | Path, index: int, count: int):
        self.folder = Path(folder)
        self.index = index
        self.count = count
        self._last: tuple[bool, float] | None = None

    @classmethod
    def from_env(cls) -> "Peers | None":
        """The peers of this process when started by ``service.workers`` (``SINDER_PEERS=<folder>:<index>:<count>``)."""
        spec = os.environ.get("SINDER_PEERS")
        if not spec:
            return None
        folder, index, count = spec.rsplit(":", 2)
        return cls(folder, int(index), int(count))

    def publish(self, ready: bool) -> None:
        """Write this worker's readiness (atomically) when it changed or the file is due for a refresh."""
        now = time.monotonic()
        if self._last is not None and self._last[0] == ready and now - self._last[1] < REFRESH_S:
            return
        path = self.folder / str(self.index)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(f"{int(ready)} {os.getpid()}\n")
        os.replace(tmp, path)
        self._last = (ready, now)

    def not_ready(self) -> list[str]:
        """Reasons the other workers are not all ready (empty when they are)."""
        reasons, now = [], time.time()
        for i in range(self.count):
            if i == self.index:
                continue
            path = self.folder / str(i)
            try:
                text = path.read_text().split()
                age = now - path.stat().st_mtime
                ready, pid = text[0] == "1", int(text[1])
            except (OSError, IndexError, ValueError):
                reasons.append(f"worker {i} has not started")
                continue
            if not _alive(pid):
                reasons.append(f"worker {i} (pid {pid}) exited")
            elif age > STALE_S:
                reasons.append(f"worker {i} (pid {pid}) has not reported for {age:.0f} s")
            elif not ready:
                reasons.append(f"worker {i} is not ready")
        return reasons


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
