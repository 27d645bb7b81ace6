"""Decoding fan-out: every image of a request decoded and resized in a thread pool, off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

import numpy as np

from service.config import Settings
from service.core import images as img
from service.core.errors import InvalidInput, ServiceError
from service.core.features import FeatureOptions
from service.core.metrics import Metrics
from service.core.registry import ModelVersion

# Raw bytes, base64 / data-URI text, or pixels already at the model's input size (uint8 [H, W, 3]).
ImageInput = bytes | str | np.ndarray


class Decoder:
    def __init__(self, settings: Settings, metrics: Metrics):
        self._max_pixels = settings.max_image_pixels
        self._draft = settings.jpeg_draft
        self._metrics = metrics
        self._threads = settings.decode_threads
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.pending = 0  # images handed to the pool and not decoded yet
        self.seconds_per_image: float | None = None  # moving average of one image's decode time in a thread

    def drain_seconds(self, extra: int = 0) -> float:
        """Expected seconds until the pending images and ``extra`` more are decoded (0 before any measurement)."""
        if self.seconds_per_image is None:
            return 0.0
        return (self.pending + extra) * self.seconds_per_image / self._threads

    async def prepare(self, images: list[ImageInput], entry: ModelVersion, options: FeatureOptions) -> list[np.ndarray]:
        """Model inputs for every image; the first bad image (lowest index) fails the request."""
        if all(isinstance(raw, np.ndarray) for raw in images):  # pixels are only checked: no thread hop for that
            try:
                return [self._prepare_one(raw, i, entry, options) for i, raw in enumerate(images)]
            except ServiceError as exc:
                self._metrics.reject(exc.type)
                raise
        loop = asyncio.get_running_loop()
        # One job per decode thread, not per image: as parallel, with fewer thread hand-offs.
        step = -(-len(images) // self._threads)
        jobs = [loop.run_in_executor(self._pool, self._prepare_run, images[i:i + step], i, entry, options)
                for i in range(0, len(images), step)]
        self.pending += len(images)
        try:
            results = await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            self.pending -= len(images)
        for result in results:  # in image order: the first failed job holds the lowest bad index
            if isinstance(result, BaseException):
                if isinstance(result, ServiceError):
                    self._metrics.reject(result.type)
                raise result
        return [array for run in results for array in run]

    async def offload(self, fn: Callable, *args):
        """Run ``fn(*args)`` in the decode pool (CPU work that must not hold up the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _prepare_run(self, raws: list[ImageInput], start: int, entry: ModelVersion, options: FeatureOptions) -> list[np.ndarray]:
        return [self._prepare_one(raw, start + k, entry, options) for k, raw in enumerate(raws)]

    def _prepare_one(self, raw: ImageInput, index: int, entry: ModelVersion, options: FeatureOptions) -> np.ndarray:
        start = time.monotonic()
        if isinstance(raw, np.ndarray):
            out = _pixels(raw, index, entry)
        else:
            data = img.decode_base64(raw, index) if isinstance(raw, str) else raw
            out = img.decode_for(data, index, entry.resize, options.resize, short_side=options.short_side,
                                 resolution=options.resolution, max_pixels=self._max_pixels, draft=self._draft)
        elapsed = time.monotonic() - start
        self._metrics.decode_duration.observe(elapsed)
        previous = self.seconds_per_image  # a race between threads here only blurs an average
        self.seconds_per_image = elapsed if previous is None else 0.9 * previous + 0.1 * elapsed
        return out


def _pixels(array: np.ndarray, index: int, entry: ModelVersion) -> np.ndarray:
    """Pixels given as they are: uint8 [H, W, 3] at a size the model accepts, never resized."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InvalidInput(f"image {index}: pixels must be uint8 [H, W, 3], got {array.dtype} {list(array.shape)}", index=index)
    try:
        entry.resize.check_resolution(array.shape[0], array.shape[1])
    except InvalidInput as exc:
        raise InvalidInput(f"image {index}: {exc.message}", index=index) from None
    return np.ascontiguousarray(array)
