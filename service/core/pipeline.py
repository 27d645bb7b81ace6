"""The one path every image takes: count check, admission against the deadline, decoding, batching, waiting.

``/features`` runs one model; ``/visualize`` runs the same decoded image through a model and its
repaired pair. Both go through ``Pipeline.run``, so both get every admission check and mark
their images as incoming for the batcher.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.core.admission import Admission
from service.core.batcher import ItemResult
from service.core.deadlines import Deadline, Disconnected, wait_all
from service.core.decoding import Decoder, ImageInput
from service.core.errors import DeadlineExceeded, InvalidInput, ModelUnavailable, PayloadTooLarge
from service.core.features import FeatureOptions
from service.core.metrics import Metrics
from service.core.registry import ModelVersion
from service.core.stats import Stats


@dataclass
class Ran:
    arrays: list[np.ndarray]  # the model inputs, in request order
    results: list[list[ItemResult]]  # per model, per image
    decode_s: float


class Pipeline:
    def __init__(self, settings: Settings, metrics: Metrics, admission: Admission, decoder: Decoder, stats: Stats):
        self._max_images = settings.max_images
        self._metrics = metrics
        self._admission = admission
        self._decoder = decoder
        self._stats = stats

    async def run(self, models: list[ModelVersion], images: list[ImageInput], options: FeatureOptions,
                  deadline: Deadline, disconnected: Disconnected | None = None) -> Ran:
        """Decode ``images`` at ``models[0]``'s input size and run them through every model in ``models``."""
        self._check_count(len(images))
        if options.resolution is not None:
            models[0].resize.check_resolution(*options.resolution)
        with contextlib.ExitStack() as incoming:
            # No await from the first check to the last mark: concurrent requests see each other's images.
            decoding_s = self._decoder.drain_seconds(len(images))
            for entry in models:
                if entry.batcher is None:
                    raise ModelUnavailable(f"model {entry.key} is not serving")
                self._admission.check_work(entry.batcher, entry.key, len(images), deadline, decoding_s)
            for entry in models:
                incoming.enter_context(entry.batcher.incoming(len(images)))
            start = time.monotonic()
            arrays = await self._decoder.prepare(images, models[0], options)
            decode_s = time.monotonic() - start
            if options.one_size:
                _check_one_size(arrays)
            futures = self._submit(models, arrays, deadline)
        try:
            flat = await wait_all([f for per_model in futures for f in per_model], deadline, disconnected)
        except DeadlineExceeded:
            self._metrics.reject("deadline")
            raise
        results = [flat[i * len(arrays):(i + 1) * len(arrays)] for i in range(len(models))]
        for entry, per_model in zip(models, results):
            for item in per_model:
                self._stats.record(entry.key, item.outputs)
        return Ran(arrays, results, decode_s)

    def _check_count(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("images must hold at least one image")
        if count > self._max_images:
            self._metrics.reject("too_many_images")
            raise PayloadTooLarge(f"{count} images in one request; the limit is {self._max_images}")

    @staticmethod
    def _submit(models: list[ModelVersion], arrays: list[np.ndarray], deadline: Deadline) -> list[list]:
        """Queue the arrays on every model, or on none (a refusal cancels what was queued already)."""
        futures: list[list] = []
        try:
            for entry in models:
                futures.append(entry.batcher.submit(arrays, deadline.work_at))
        except Exception:
            for per_model in futures:
                for fut in per_model:
                    fut.cancel()
            raise
        return futures


def _check_one_size(arrays: list[np.ndarray]) -> None:
    """Refuse, before any inference, images that came to different input sizes (naming the first two)."""
    first = arrays[0].shape[:2]
    for i, array in enumerate(arrays[1:], start=1):
        if array.shape[:2] != first:
            raise InvalidInput(
                f"images 0 and {i} come to different input sizes ({first[0]}x{first[1]} and {array.shape[0]}x"
                f"{array.shape[1]}: different aspect ratios); this request answers with one [B, ...] tensor, so its "
                "images need one size: send them in separate requests, or as pixels of one size", index=i)
