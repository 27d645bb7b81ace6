"""Slow fault and load tests: a real `python -m service` subprocess on a free loopback port.

Every test here is marked slow (`make stress`), bounded in requests and time, and stops by
itself. The model repositories are the tiny contract-conforming graphs of
tests/service/tiny_repo.py (the parent conftest puts it on sys.path).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.server import ServiceProcess  # noqa: E402


@pytest.fixture
def start_service(tmp_path):
    """``start_service(repo, wait_ready=True, **SINDER_settings) -> ServiceProcess``; stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(repo: Path, wait_ready: bool = True, **settings) -> ServiceProcess:
        env = {f"SINDER_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()}
        env.setdefault("SINDER_LOG_LEVEL", "info")
        svc = ServiceProcess(repo, env=env, log_path=tmp_path / f"service-{len(started)}.log")
        started.append(svc)
        svc.start(ready_timeout=90, wait_ready=wait_ready)
        if not wait_ready:
            svc.wait_live(60)
        return svc

    yield start
    for svc in started:
        svc.stop(kill_after=30)
