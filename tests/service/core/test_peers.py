"""service.core.peers: a worker is ready only when every other worker says so, recently, and is alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from service.core.peers import STALE_S, Peers


def test_every_peer_must_be_ready_alive_and_recent(tmp_path):
    me, other, third = Peers(tmp_path, 0, 3), Peers(tmp_path, 1, 3), Peers(tmp_path, 2, 3)
    me.publish(True)
    assert me.not_ready() == ["worker 1 has not started", "worker 2 has not started"]
    other.publish(False)
    third.publish(True)
    assert me.not_ready() == ["worker 1 is not ready"]
    other.publish(True)
    assert me.not_ready() == [] and other.not_ready() == []
    old = time.time() - STALE_S - 5
    os.utime(tmp_path / "2", (old, old))
    assert "has not reported" in me.not_ready()[0]


def test_a_dead_worker_is_not_ready(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "1").write_text(f"1 {int(dead.stdout)}\n")
    assert Peers(tmp_path, 0, 2).not_ready() == [f"worker 1 (pid {int(dead.stdout)}) exited"]


def test_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SINDER_PEERS", raising=False)
    assert Peers.from_env() is None
    monkeypatch.setenv("SINDER_PEERS", f"{tmp_path}:1:4")
    peers = Peers.from_env()
    assert (peers.folder, peers.index, peers.count) == (tmp_path, 1, 4)
