"""Liveness and readiness, computed from the state of the models and the service each time they are asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from service.backends.base import GPU_PROVIDERS
from service.config import Settings
from service.core.metrics import Metrics, multiprocess
from service.core.peers import Peers
from service.core.registry import ModelRegistry


@dataclass(frozen=True)
class Status:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # why not ok; empty when ok


class Health:
    """``peers``: the other worker processes behind the same port (``SINDER_WORKERS`` > 1), whose
    readiness this one's includes; each call publishes this process's own readiness to them."""

    def __init__(self, registry: ModelRegistry, settings: Settings, draining: Callable[[], bool],
                 metrics: Metrics | None = None, peers: Peers | None = None):
        self._registry = registry
        self._settings = settings
        self._draining = draining
        self._metrics = metrics
        self.peers = peers
        if metrics is not None and not multiprocess():  # the gauge reads readiness when scraped: it is never stale
            metrics.ready.set_function(lambda: 1.0 if self.readiness().ok else 0.0)

    def liveness(self) -> Status:
        """The process can serve: every started batch worker is running (restart the process otherwise)."""
        dead = [e.key for e in self._registry.versions if e.batcher is not None and not e.batcher.alive]
        return Status(not dead, [f"batch worker of {key} stopped" for key in dead])

    def readiness(self) -> Status:
        reasons = list(self.liveness().reasons)
        versions = self._registry.versions
        if self._draining():
            reasons.append("draining")
        pending = [e.key for e in versions if e.state in ("pending", "loading")]
        if pending:
            reasons.append(f"loading {', '.join(pending)}")
        ready = self._registry.ready_versions()
        if not ready and not pending:
            reasons.append("no model could be loaded")
        failed = [e.key for e in versions if e.state == "failed"]
        if failed and self._settings.require_all_models:
            reasons.append(f"failed to load {', '.join(failed)}")
        if self._settings.require_gpu:
            cpu = [f"{e.key} ({e.provider})" for e in ready if e.provider not in GPU_PROVIDERS]
            if cpu:
                reasons.append(f"require_gpu but running on CPU: {', '.join(cpu)}")
        if self.peers is not None:
            self.peers.publish(not reasons)
            if self._metrics is not None:  # multiprocess: each worker writes its own; the scrape takes the minimum
                self._metrics.ready.set(0.0 if reasons else 1.0)
            reasons += self.peers.not_ready()
        return Status(not reasons, reasons)
