"""Prometheus metrics: one ``sinder_`` family, explicit buckets, one registry per app.

Beside it, the standard ``process_*``, ``python_info`` and ``python_gc_*`` collectors, as in
prometheus-client's default registry, so the usual dashboards and alerts (memory, CPU, open files) work.

Under ``SINDER_WORKERS`` > 1 (``PROMETHEUS_MULTIPROC_DIR`` set before the process starts),
prometheus-client keeps every ``sinder_`` value in a per-process file and ``render`` sums them
over the live processes; each gauge says how to combine (queue depths and in-flight add up, the
ready gauge is the minimum: 1 only when every worker is ready). The ``process_*`` series are then
the answering worker's own.

``sinder_model_info`` counts processes: each series (model, version, provider, state) is the number
of service processes in which that model version is in that state on that provider, so summed
over workers it stays true, and a state a model has left reads 0 in both modes (a multiprocess
file cannot forget a label set, so the single process keeps them at 0 too: one meaning). A worker
that falls back to the CPU shows as its own series beside its peers' CUDA one.
"""

from __future__ import annotations

import os

from prometheus_client import (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Gauge,
                               Histogram, disable_created_metrics, generate_latest)
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 - re-exported for the API

PREFIX = "sinder"
disable_created_metrics()  # *_created series double the output and nobody graphs them

# Seconds: from sub-millisecond queue waits to the default 30 s deadline.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DEFECT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.requests = Counter(f"{PREFIX}_http_requests_total", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=r)
        self.request_duration = Histogram(f"{PREFIX}_http_request_duration_seconds", "HTTP request duration.",
                                          ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_duration = Histogram(f"{PREFIX}_queue_duration_seconds", "Time an image waited for its batch.",
                                        ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.inference_duration = Histogram(f"{PREFIX}_inference_duration_seconds", "Backend time per batch.",
                                            ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.decode_duration = Histogram(f"{PREFIX}_decode_duration_seconds", "Decode and resize time per image.",
                                         buckets=DURATION_BUCKETS, registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Images per batch.", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Images waiting per model.", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        self.images = Counter(f"{PREFIX}_images_total", "Images processed per model.", ["model"], registry=r)
        self.rejections = Counter(f"{PREFIX}_rejections_total", "Requests or images refused, by reason.", ["reason"], registry=r)
        self.batch_failures = Counter(f"{PREFIX}_batch_failures_total", "Batches that failed in the backend.", ["model"], registry=r)
        self.defect_tokens = Histogram(f"{PREFIX}_defect_tokens", "Defective tokens per image.", ["model"],
                                       buckets=DEFECT_BUCKETS, registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info",
                                "Service processes with this model version in this state (pending, loading, ready, "
                                "failed) on this provider; 0: none now.",
                                ["model", "version", "provider", "state"], registry=r, multiprocess_mode="livesum")
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the service is ready.", registry=r, multiprocess_mode="livemin")
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Requests being served now.", registry=r,
                              multiprocess_mode="livesum")
        self._model_info_seen: set[tuple[str, ...]] = set()

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejections.labels(reason).inc(count)

    def set_model_info(self, current: list[tuple[str, str, str, str]]) -> None:
        """This process's model versions as (model, version, provider, state): each 1, every label set left behind 0."""
        for labels in self._model_info_seen - set(current):
            self.model_info.labels(*labels).set(0)
        self._model_info_seen |= set(current)
        for labels in current:
            self.model_info.labels(*labels).set(1)

    def render(self) -> bytes:
        if multiprocess():
            from prometheus_client import multiprocess as mp

            combined = CollectorRegistry()
            mp.MultiProcessCollector(combined)
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                combined.register(collector)
            return generate_latest(combined)
        return generate_latest(self.registry)


def multiprocess() -> bool:
    """Values live in per-process files, summed on scrape (set by service.workers)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
