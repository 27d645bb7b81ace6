"""Dynamic batching for one model: a bounded queue, batches grouped by input shape.

Each image gets its own future. The worker takes up to ``max_batch_size`` images of one
shape once that many are waiting or the oldest has waited ``max_queue_delay``, drops the
ones whose caller went away or whose deadline passed, runs the batch in a thread (the
event loop stays free) and fans results, or the batch's error, out to every future. A
failing batch never stops the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.core.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from service.core.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    outputs: dict[str, np.ndarray]  # this image's slice of every output
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(eq=False)
class _Item:
    image: np.ndarray
    future: asyncio.Future
    deadline: float  # time.monotonic()
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, name: str, infer: Callable[[np.ndarray], dict[str, np.ndarray]], *,
                 max_batch_size: int, max_queue_delay_s: float, queue_size: int, metrics: Metrics | None = None,
                 wait_only_for_incoming: bool = False, seconds_per_image: float | None = None):
        self.name = name
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.queue_size = queue_size
        self._metrics = metrics
        self._pending: dict[tuple, deque[_Item]] = {}
        self._depth = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task | None = None
        # One thread: one batch at a time per model keeps batches full and memory flat.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
        # Measured drain rate (moving average of backend seconds per image), for admission and
        # Retry-After; None until the first batch ran, unless an estimate is given (from warmup).
        self.seconds_per_image = seconds_per_image
        self._running = 0  # images of the batch in the backend now
        # With wait_only_for_incoming, a partial batch waits for max_queue_delay only while
        # another request for this model is being decoded: a lone client pays no delay.
        self._wait_only_for_incoming = wait_only_for_incoming
        self._incoming = 0  # images of admitted requests still being decoded

    # -- public -------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    @property
    def alive(self) -> bool:
        """False only if the worker stopped without being asked to (it should never)."""
        return self._closing or (self._worker is not None and not self._worker.done())

    @property
    def backlog(self) -> int:
        """Images that will run before one submitted now: queued, being decoded, or in the backend."""
        return self._depth + self._incoming + self._running

    def drain_seconds(self, extra: int = 0) -> float | None:
        """Expected seconds until the backlog and ``extra`` more images have run; None before any measurement."""
        if self.seconds_per_image is None:
            return None
        return (self.backlog + extra) * self.seconds_per_image

    def retry_after(self) -> float:
        """Seconds until the backlog has likely drained, at the measured rate (at least 1)."""
        return max(1.0, math.ceil(self.drain_seconds() or 0.0))

    def has_room(self, count: int) -> bool:
        return self._depth + count <= self.queue_size

    def submit(self, images: list[np.ndarray], deadline: float) -> list[asyncio.Future]:
        """Queue all images or none; one future per image, resolving to an ``ItemResult``."""
        if self._closing:
            raise Unavailable(f"model {self.name} is draining; no new work is accepted", retry_after=1)
        if not self.has_room(len(images)):
            if self._metrics:
                self._metrics.reject("queue_full")
            raise Overloaded(
                f"queue of model {self.name} is full ({self._depth}/{self.queue_size} images waiting); retry later",
                retry_after=self.retry_after(),
            )
        loop = asyncio.get_running_loop()
        futures = []
        for image in images:
            item = _Item(image, loop.create_future(), deadline)
            self._pending.setdefault(self._key(image), deque()).append(item)
            item.future.add_done_callback(lambda fut, item=item: self._forget_if_cancelled(item))
            futures.append(item.future)
        self._depth += len(images)
        self._set_depth_gauge()
        self._wakeup.set()
        return futures

    @contextlib.contextmanager
    def incoming(self, count: int = 1):
        """Mark ``count`` images as on their way (being decoded): partial batches wait for them, and they count
        in the backlog that later requests are admitted against."""
        self._incoming += count
        try:
            yield
        finally:
            self._incoming -= count
            if self._incoming == 0:
                self._wakeup.set()

    def _more_expected(self) -> bool:
        return not self._wait_only_for_incoming or self._incoming > 0

    def stop_accepting(self) -> None:
        """Refuse new work; the worker keeps running what is queued, without waiting for fuller batches."""
        self._closing = True
        self._wakeup.set()

    async def close(self, grace_s: float) -> None:
        """Stop taking work, finish what is queued within ``grace_s``, then stop the worker."""
        self.stop_accepting()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), grace_s)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._worker.cancel()
        self._fail_pending(Unavailable(f"model {self.name} shut down before this image ran"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- worker -------------------------------------------------------------------------
    @staticmethod
    def _key(image: np.ndarray) -> tuple:
        return image.shape

    def _forget_if_cancelled(self, item: _Item) -> None:
        # A caller that went away cancels its futures: free their queue slots now.
        if not item.future.cancelled():
            return
        queue = self._pending.get(self._key(item.image))
        if queue is None:
            return
        try:
            queue.remove(item)
        except ValueError:
            return  # already taken into a batch
        if not queue:
            del self._pending[self._key(item.image)]
        self._depth -= 1
        self._set_depth_gauge()
        if self._metrics:
            self._metrics.reject("client_gone")

    def _next_batch(self) -> tuple[list[_Item] | None, float]:
        """A batch ready to run, or None and how long to wait before one may be."""
        if not self._pending:
            return None, math.inf
        now = time.monotonic()
        full = [q for q in self._pending.values() if len(q) >= self.max_batch_size]
        oldest = min(full or self._pending.values(), key=lambda q: q[0].enqueued)
        wait = oldest[0].enqueued + self.max_queue_delay_s - now
        if not full and wait > 0 and not self._closing and self._more_expected():
            return None, wait
        key = self._key(oldest[0].image)
        items = [oldest.popleft() for _ in range(min(len(oldest), self.max_batch_size))]
        if not oldest:
            del self._pending[key]
        self._depth -= len(items)
        self._set_depth_gauge()
        return items, 0.0

    async def _run(self) -> None:
        while True:
            items = None
            try:
                items, wait = self._next_batch()
                if items is None:
                    if self._closing and not self._pending:
                        return
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), None if math.isinf(wait) else wait)
                    except asyncio.TimeoutError:
                        pass
                    continue
                await self._execute(items)
            except asyncio.CancelledError:
                if items:
                    self._fail(items, Unavailable(f"model {self.name} shut down while this image was running"))
                raise
            except Exception as exc:  # a bug here must not strand futures or stop the worker
                log.exception("batcher %s: unexpected error", self.name)
                if items:
                    self._fail(items, InferenceFailed(f"internal error while batching for model {self.name}: {exc}"))

    async def _execute(self, items: list[_Item]) -> None:
        now = time.monotonic()
        live = []
        for item in items:
            if item.future.done():  # cancelled by a caller that went away
                continue
            if now >= item.deadline:
                if self._metrics:
                    self._metrics.reject("deadline")
                item.future.set_exception(DeadlineExceeded(f"request deadline passed after {now - item.enqueued:.3f} s in the queue"))
                continue
            live.append(item)
        if not live:
            return
        batch = np.stack([item.image for item in live])
        start = time.monotonic()
        self._running = len(live)
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, batch)
            for name, value in outputs.items():
                if getattr(value, "shape", (None,))[0] != len(live):
                    raise ValueError(f"output {name!r} has leading dimension {value.shape[0]}, expected {len(live)}")
        except Exception as exc:
            log.error("model %s: batch of %d images %s failed: %s", self.name, len(live), batch.shape[1:3], exc)
            if self._metrics:
                self._metrics.batch_failures.labels(self.name).inc()
            self._fail(live, InferenceFailed(f"inference failed on model {self.name} for a batch of {len(live)}: {exc}"))
            return
        finally:
            self._running = 0
        elapsed = time.monotonic() - start
        per_image = elapsed / len(live)
        previous = self.seconds_per_image
        self.seconds_per_image = per_image if previous is None else 0.8 * previous + 0.2 * per_image
        if self._metrics:
            self._metrics.inference_duration.labels(self.name).observe(elapsed)
            self._metrics.batch_size.labels(self.name).observe(len(live))
            self._metrics.images.labels(self.name).inc(len(live))
        for i, item in enumerate(live):
            queue_s = start - item.enqueued
            if self._metrics:
                self._metrics.queue_duration.labels(self.name).observe(queue_s)
            if not item.future.done():
                item.future.set_result(ItemResult({k: v[i] for k, v in outputs.items()}, queue_s, elapsed, len(live)))

    def _fail(self, items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    def _fail_pending(self, error: Exception) -> None:
        for queue in list(self._pending.values()):
            self._fail(list(queue), error)
        self._pending.clear()
        self._depth = 0
        self._set_depth_gauge()

    def _set_depth_gauge(self) -> None:
        if self._metrics:
            self._metrics.queue_depth.labels(self.name).set(self._depth)
