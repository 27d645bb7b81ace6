"""The feature service as the API sees it: admission, decoding off the loop, batching, results.

Owns the model registry, the metrics, the decode thread pool and the draining flag. Knows
nothing of HTTP: callers hand it image bytes (or base64 text) and options.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from service.backends.base import Backend
from service.config import Settings
from service.core import features as feat
from service.core import images as img
from service.core import visualize as viz
from service.core.batcher import ItemResult
from service.core.errors import ClientGone, DeadlineExceeded, InvalidInput, Overloaded, PayloadTooLarge, ServiceError, Unavailable
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ModelVersion

log = logging.getLogger(__name__)
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
ImageInput = bytes | str  # raw bytes, or base64 / data-URI text


def onnxruntime_factory(settings: Settings) -> Callable[[Path], Backend]:
    def make(path: Path) -> Backend:
        from service.backends.onnx_runtime import OnnxRuntimeBackend  # onnxruntime imported only when serving

        return OnnxRuntimeBackend(path, settings.providers, device_id=settings.device_id,
                                  intra_op_threads=settings.intra_op_threads)

    return make


def parse_model_ref(model) -> tuple[str | None, int | None]:
    """``None``, ``"name"``, ``"name:3"`` or ``{"name": ..., "version": 3}``."""
    if model is None:
        return None, None
    if isinstance(model, dict):
        return model.get("name"), model.get("version")
    name, sep, version = str(model).rpartition(":")
    if sep and version.isdigit():
        return name, int(version)
    return str(model), None


class Ticket:
    """One admitted request's share of the in-flight body-byte budget (memory stays bounded under bursts)."""

    def __init__(self, service: "FeatureService"):
        self._service = service
        self.reserved = 0

    def reserve(self, nbytes: int) -> None:
        service = self._service
        limit = service.settings.max_inflight_bytes
        if service.inflight_bytes + nbytes > limit:
            service.metrics.reject("memory_budget")
            raise Overloaded(f"request bodies in flight would exceed {limit} bytes; retry later", retry_after=1)
        service.inflight_bytes += nbytes
        self.reserved += nbytes


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
        self.inflight = 0
        self.inflight_bytes = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._loader: asyncio.Task | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Begin loading models in the background: liveness answers at once, readiness once loaded."""
        if not self.registry.versions:
            log.error("no model in %s: run `sinder build --demo` (or export one); readiness stays false",
                      self.settings.model_repo)
        self._loader = asyncio.get_running_loop().create_task(self.registry.load_all(), name="load-models")

    async def wait_loaded(self) -> None:
        if self._loader is not None:
            await asyncio.shield(self._loader)

    def begin_draining(self) -> None:
        if not self.draining:
            log.info("draining: readiness false, new requests get 503, queued work finishes")
        self.draining = True
        self.metrics.ready.set(0)

    async def stop(self, grace_s: float | None = None) -> None:
        grace_s = self.settings.drain_grace_s if grace_s is None else grace_s
        self.begin_draining()
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        deadline = time.monotonic() + grace_s
        while self.inflight and time.monotonic() < deadline:  # let accepted requests take their results
            await asyncio.sleep(0.02)
        await self.registry.close(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def liveness(self) -> tuple[bool, list[str]]:
        """The process can serve: every started batch worker is running (restart the process otherwise)."""
        dead = [e.key for e in self.registry.versions if e.batcher is not None and not e.batcher.alive]
        return not dead, [f"batch worker of {key} stopped" for key in dead]

    def readiness(self) -> tuple[bool, list[str]]:
        alive, reasons = self.liveness()
        if self.draining:
            reasons.append("draining")
        pending = [e.key for e in self.registry.versions if e.state in ("pending", "loading")]
        if pending:
            reasons.append(f"loading {', '.join(pending)}")
        ready = self.registry.ready_versions()
        if not ready and not pending:
            reasons.append("no model could be loaded")
        failed = [e.key for e in self.registry.versions if e.state == "failed"]
        if failed and self.settings.require_all_models:
            reasons.append(f"failed to load {', '.join(failed)}")
        if self.settings.require_gpu:
            cpu = [f"{e.key} ({e.provider})" for e in ready if e.provider not in GPU_PROVIDERS]
            if cpu:
                reasons.append(f"require_gpu but running on CPU: {', '.join(cpu)}")
        ok = alive and not reasons
        self.metrics.ready.set(1 if ok else 0)
        return ok, reasons

    # -- admission ----------------------------------------------------------------------
    @contextlib.contextmanager
    def admit(self):
        """Count the request as in flight; refuse at once when draining or too many are in flight.

        Yields a ``Ticket`` whose ``reserve(n)`` books body bytes against the in-flight byte budget.
        """
        if self.draining:
            self.metrics.reject("draining")
            raise Unavailable("service is draining (shutting down); retry on another replica", retry_after=1)
        if self.inflight >= self.settings.max_inflight_requests:
            self.metrics.reject("too_many_requests")
            raise Overloaded(f"{self.inflight} requests in flight (limit {self.settings.max_inflight_requests}); retry later",
                             retry_after=1)
        ticket = Ticket(self)
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        try:
            yield ticket
        finally:
            self.inflight -= 1
            self.inflight_bytes -= ticket.reserved
            self.metrics.inflight.set(self.inflight)

    def resolve(self, model) -> ModelVersion:
        return self.registry.resolve(*parse_model_ref(model))

    def check_count(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("images must hold at least one image")
        if count > self.settings.max_images:
            self.metrics.reject("too_many_images")
            raise PayloadTooLarge(f"{count} images in one request; the limit is {self.settings.max_images}")

    # -- work ---------------------------------------------------------------------------
    def _prepare_one(self, raw: ImageInput, index: int, entry: ModelVersion, options: feat.FeatureOptions) -> np.ndarray:
        start = time.monotonic()
        data = img.decode_base64(raw, index) if isinstance(raw, str) else raw
        array = img.decode(data, index, max_pixels=self.settings.max_image_pixels)
        size = entry.resize.target(array.shape[0], array.shape[1], options.resize,
                                   short_side=options.short_side, resolution=options.resolution)
        out = img.resize(array, size)
        self.metrics.decode_duration.observe(time.monotonic() - start)
        return out

    async def prepare(self, images: list[ImageInput], entry: ModelVersion, options: feat.FeatureOptions) -> list[np.ndarray]:
        """Decode and resize every image in the thread pool; the first bad image (lowest index) fails the request."""
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._pool, self._prepare_one, raw, i, entry, options) for i, raw in enumerate(images)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, ServiceError):
                    self.metrics.reject(result.type)
                raise result
        return results

    async def infer(self, entry: ModelVersion, arrays: list[np.ndarray], deadline: float,
                    disconnected: Callable[[], Awaitable] | None = None) -> list[ItemResult]:
        """Queue the arrays, wait for all results, the deadline, or the caller going away."""
        if entry.batcher is None:
            raise Unavailable(f"model {entry.key} is not serving")
        futures = entry.batcher.submit(arrays, deadline)
        everything = asyncio.gather(*futures)
        everything.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        waiters = {everything}
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        if watcher is not None:
            waiters.add(watcher)
        try:
            done, _ = await asyncio.wait(waiters, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if everything in done:
                return everything.result()
            if watcher is not None and watcher in done:
                raise ClientGone("client disconnected; its queued images were dropped")
            self.metrics.reject("deadline")
            raise DeadlineExceeded(f"no result within the request deadline of {self.settings.request_timeout_s} s")
        finally:
            if watcher is not None:
                watcher.cancel()
            for fut in futures:  # drop this request's images still queued (after an error or timeout)
                if not fut.done():
                    fut.cancel()

    async def features(self, images: list[ImageInput], model, options: feat.FeatureOptions,
                       disconnected: Callable[[], Awaitable] | None = None) -> bytes:
        """The JSON body of a /features answer (bytes)."""
        started = time.monotonic()
        deadline = started + self.settings.request_timeout_s
        entry = self.resolve(model)
        self.check_count(len(images))
        options = feat.with_outputs_for(options, entry.output_names, entry.key)
        if options.resolution is not None:
            entry.resize.check_resolution(*options.resolution)
        if not entry.batcher.has_room(len(images)):  # cheap refusal before decoding anything
            self.metrics.reject("queue_full")
            raise Overloaded(f"queue of model {entry.key} is full; retry later", retry_after=entry.batcher.retry_after())
        with entry.batcher.incoming():
            arrays = await self.prepare(images, entry, options)
        decoded = time.monotonic()
        results = await self.infer(entry, arrays, deadline, disconnected)
        for res in results:
            self._record(entry, res.outputs)

        def build() -> bytes:
            out = [feat.image_result(i, res.outputs, options, res.queue_s, res.inference_s, res.batch_size)
                   for i, res in enumerate(results)]
            body = {"model": entry.name, "model_version": entry.version, "results": out,
                    "timing": {"decode_ms": round((decoded - started) * 1000, 3),
                               "total_ms": round((time.monotonic() - started) * 1000, 3)}}
            return json.dumps(body, separators=(",", ":")).encode()

        return await asyncio.get_running_loop().run_in_executor(self._pool, build)

    def _record(self, entry: ModelVersion, outputs: dict[str, np.ndarray]) -> None:
        mask = outputs.get("defect_mask")
        if mask is None:
            return
        count = int(np.count_nonzero(mask))
        self.metrics.defect_tokens.labels(entry.key).observe(count)
        entry.images_served += 1
        entry.defect_fraction_sum += count / max(1, mask.size)

    # -- pictures -----------------------------------------------------------------------
    def pair_of(self, entry: ModelVersion) -> tuple[ModelVersion | None, ModelVersion | None]:
        """(original, repaired) for ``entry``, either found by the ``_sinder`` suffix or a manifest link."""
        manifest = entry.manifest
        repair = manifest.get("repair") if isinstance(manifest.get("repair"), dict) else {}
        source = manifest.get("source_model") or repair.get("source_model")
        repaired = manifest.get("repaired_model")
        if entry.name.endswith("_sinder") or source:
            other = source or entry.name[: -len("_sinder")]
            return self._ready(other), entry
        return entry, self._ready(repaired or f"{entry.name}_sinder")

    def _ready(self, name) -> ModelVersion | None:
        if not isinstance(name, str):
            return None
        try:
            return self.registry.resolve(name)
        except ServiceError:
            return None

    async def visualize(self, image: ImageInput, model, options: feat.FeatureOptions, compare: bool = True,
                        disconnected: Callable[[], Awaitable] | None = None) -> bytes:
        """PNG bytes: one row per model (original, then repaired when both are present)."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        entry = self.resolve(model)
        needed = ("patch_tokens", "token_norms", "defect_mask")
        missing = [n for n in needed if n not in entry.output_names]
        if missing:
            raise InvalidInput(f"model {entry.key} lacks outputs {missing} needed for the picture")
        if options.resolution is not None:
            entry.resize.check_resolution(*options.resolution)
        rows_for = [entry]
        if compare:
            original, repaired = self.pair_of(entry)
            pair = [m for m in (original, repaired) if m is not None]
            if len(pair) == 2 and all(n in m.output_names for m in pair for n in needed) and pair[0].patch_size == pair[1].patch_size:
                rows_for = pair
        (array,) = await self.prepare([image], entry, options)
        rows = []
        for model_entry in rows_for:
            (res,) = await self.infer(model_entry, [array], deadline, disconnected)
            o = res.outputs
            manifest = model_entry.manifest or {}
            role = "repaired" if manifest.get("repair") else "original"
            label = f"{model_entry.key}, {role} ({model_entry.provider})"
            # Numbers from the generated demo weights must never pass for a real model's.
            rows.append(viz.Row(label, array, o["patch_tokens"], o["token_norms"], o["defect_mask"],
                                synthetic=manifest.get("synthetic") is True))
        return await asyncio.get_running_loop().run_in_executor(self._pool, viz.render, rows)
