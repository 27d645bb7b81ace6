"""The feature service as the API sees it: its parts wired together, and its lifecycle.

Each job has its own module: admission (``admission``), decoding (``decoding``), the shared
image path (``pipeline``), deadlines and disconnects (``deadlines``), health (``health``),
per-model statistics (``stats``), pictures (``pictures``). This module starts them, drains and
stops them, and is the one object the API holds. It knows nothing of HTTP or wire formats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from service.backends.base import Backend
from service.config import Settings
from service.core import features as feat
from service.core.admission import Admission
from service.core.deadlines import Deadline, Disconnected
from service.core.decoding import Decoder, ImageInput
from service.core.health import Health
from service.core.metrics import Metrics
from service.core.peers import REFRESH_S, Peers
from service.core.pictures import Pictures
from service.core.pipeline import Pipeline
from service.core.registry import ModelRegistry, ModelVersion
from service.core.stats import Stats

log = logging.getLogger(__name__)


def onnxruntime_factory(settings: Settings) -> Callable[[Path], Backend]:
    def make(path: Path) -> Backend:
        from service.backends.onnx_runtime import OnnxRuntimeBackend  # onnxruntime imported only when serving

        return OnnxRuntimeBackend(path, settings.providers, device_id=settings.device_id,
                                  intra_op_threads=settings.intra_op_threads)

    return make


class FeatureService:
    def __init__(self, settings: Settings, backend_factory: Callable[[Path], Backend] | None = None,
                 metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = ModelRegistry(
            settings.model_repo, backend_factory or onnxruntime_factory(settings),
            max_batch_size=settings.max_batch_size, max_queue_delay_s=settings.max_queue_delay_s,
            queue_size=settings.queue_size, metrics=self.metrics, names=settings.models,
            version_policy=settings.version_policy, default_model=settings.default_model, warmup=settings.warmup,
        )
        self.draining = False
        self.admission = Admission(settings, self.metrics, lambda: self.draining)
        self.health = Health(self.registry, settings, lambda: self.draining, self.metrics, Peers.from_env())
        self.stats = Stats(self.metrics)
        self.decoder = Decoder(settings, self.metrics)
        self.pipeline = Pipeline(settings, self.metrics, self.admission, self.decoder, self.stats)
        self.pictures = Pictures(self.registry, self.pipeline, self.decoder)
        self._loader: asyncio.Task | None = None
        self._publisher: asyncio.Task | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Begin loading models in the background: liveness answers at once, readiness once loaded."""
        if not self.registry.versions:
            log.error("no model in %s: run `sinder build --demo` (or export one); readiness stays false",
                      self.settings.model_repo)
        self._loader = asyncio.get_running_loop().create_task(self.registry.load_all(), name="load-models")
        if self.health.peers is not None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_readiness(), name="publish-readiness")

    async def _publish_readiness(self) -> None:
        """Keep this worker's readiness fresh for the other workers (service.core.peers)."""
        while True:
            self.health.readiness()
            await asyncio.sleep(REFRESH_S)

    async def wait_loaded(self) -> None:
        if self._loader is not None:
            await asyncio.shield(self._loader)

    def begin_draining(self) -> None:
        """Readiness false and new requests refused (503); accepted work goes on."""
        if not self.draining:
            log.info("draining: readiness false, new requests get 503, queued work finishes")
        # Called from a signal handler: no metric or file work here (a lock held by the interrupted code would
        # deadlock); the readiness publisher tells the other workers within REFRESH_S.
        self.draining = True

    async def stop(self, grace_s: float | None = None) -> None:
        grace_s = self.settings.drain_grace_s if grace_s is None else grace_s
        self.begin_draining()
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self._publisher is not None:
            self._publisher.cancel()
            self.health.readiness()
        deadline = time.monotonic() + grace_s
        while self.admission.inflight and time.monotonic() < deadline:  # let accepted requests take their results
            await asyncio.sleep(0.02)
        await self.registry.close(max(0.0, deadline - time.monotonic()))
        self.decoder.shutdown()

    # -- requests -----------------------------------------------------------------------
    def deadline(self, requested_s: float | None = None) -> Deadline:
        """A new request's deadline: the caller's own when shorter than the service's."""
        limit = self.settings.request_timeout_s
        return Deadline.after(limit if requested_s is None else min(requested_s, limit))

    async def offload(self, fn: Callable, *args):
        """Run CPU work (encoding an answer, say) in the decode pool, off the event loop."""
        return await self.decoder.offload(fn, *args)

    def resolve(self, name: str | None = None, version: int | None = None) -> ModelVersion:
        return self.registry.resolve(name, version)

    async def features(self, images: list[ImageInput], entry: ModelVersion, options: feat.FeatureOptions,
                       deadline: Deadline, disconnected: Disconnected | None = None) -> feat.FeaturesResult:
        options = feat.with_outputs_for(options, entry.output_names, entry.key)
        ran = await self.pipeline.run([entry], images, options, deadline, disconnected)
        return feat.FeaturesResult(entry.name, entry.version, options.outputs, ran.results[0],
                                   started=deadline.started, decode_s=ran.decode_s)

    async def visualize(self, image: ImageInput, entry: ModelVersion, options: feat.FeatureOptions, compare: bool,
                        deadline: Deadline, disconnected: Disconnected | None = None) -> bytes:
        """PNG bytes: one row per model (original, then repaired when both are present)."""
        return await self.pictures.render(image, entry, options, compare, deadline, disconnected)
