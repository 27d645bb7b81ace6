"""Prometheus metrics: one ``sinder_`` family, explicit buckets, one registry per app.

Beside it, the standard ``process_*``, ``python_info`` and ``python_gc_*`` collectors, as in
prometheus-client's default registry, so the usual dashboards and alerts (memory, CPU, open files) work.

Under ``SINDER_WORKERS`` > 1 (``PROMETHEUS_MULTIPROC_DIR`` set before the process starts),
prometheus-client keeps every ``sinder_`` value in a per-process file and ``render`` sums them
over the live processes; each gauge says how to combine (queue depths and in-flight add up, the
ready gauge is the minimum: 1 only when every worker is ready). The ``process_*`` series are then
the answering worker's own.
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
        self.model_info = Gauge(f"{PREFIX}_model_info", "Loaded models (1 = ready, 0 = not).",
                                ["model", "version", "provider", "state"], registry=r, multiprocess_mode="livemin")
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the service is ready.", registry=r, multiprocess_mode="livemin")
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Requests being served now.", registry=r,
                              multiprocess_mode="livesum")
        self._model_info_seen: set[tuple[str, ...]] = set()

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejections.labels(reason).inc(count)

    def set_model_info(self, rows: list[tuple[tuple[str, ...], float]]) -> None:
        """One series per model version with its current state; a state left behind drops out (0 across workers)."""
        current = {labels for labels, _ in rows}
        if multiprocess():  # label sets cannot be removed there: a state left behind reads 0
            for labels in self._model_info_seen - current:
                self.model_info.labels(*labels).set(0)
        else:
            self.model_info.clear()
        self._model_info_seen |= current
        for labels, value in rows:
            self.model_info.labels(*labels).set(value)

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
