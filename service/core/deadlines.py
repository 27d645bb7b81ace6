"""A request's deadline, and waiting for its images' results until then or until the caller goes away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.core.errors import ClientGone, DeadlineExceeded

Disconnected = Callable[[], Awaitable]  # returns when the caller has gone away


# The last part of a deadline is kept for encoding and sending the answer: images must have
# run by ``work_at``, so that a 200 leaves before ``at``.
RESPONSE_SHARE = 0.1
RESPONSE_MAX_S = 0.5


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the answer must be out
    seconds: float  # the budget it was made with, for messages

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    def within(self, seconds: float) -> "Deadline":
        """This deadline, or the one ``seconds`` from the same start when that comes sooner."""
        return self if seconds >= self.seconds else Deadline(self.started + seconds, seconds)

    @property
    def started(self) -> float:
        return self.at - self.seconds

    @property
    def work_at(self) -> float:
        """When the images must have run."""
        return self.at - min(RESPONSE_SHARE * self.seconds, RESPONSE_MAX_S)

    def remaining(self) -> float:
        """Seconds left for the images to run."""
        return max(0.0, self.work_at - time.monotonic())


async def wait_all(futures: list[asyncio.Future], deadline: Deadline, disconnected: Disconnected | None = None) -> list:
    """Every future's result; DeadlineExceeded or ClientGone first if either comes sooner.

    On any way out but success, this request's futures still queued are cancelled, so that
    the batcher drops their images instead of running them for nobody.
    """
    everything = asyncio.gather(*futures)
    everything.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
    waiters = {everything}
    watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
    if watcher is not None:
        waiters.add(watcher)
    try:
        done, _ = await asyncio.wait(waiters, timeout=deadline.remaining(), return_when=asyncio.FIRST_COMPLETED)
        if everything in done:
            return everything.result()
        if watcher is not None and watcher in done:
            raise ClientGone("client disconnected; its queued images were dropped")
        raise DeadlineExceeded(f"no result within the request deadline of {deadline.seconds:g} s")
    finally:
        if watcher is not None:
            watcher.cancel()
        for fut in futures:
            if not fut.done():
                fut.cancel()
