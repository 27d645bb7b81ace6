"""Admission: which requests the service takes on, refusing the rest at once instead of queueing them.

Three bounds keep memory and latency flat under any burst: requests in flight, request-body
bytes in flight, and per model the work ahead. A request is taken on only if its images can
be expected to run before its deadline, from the backlog ahead of them (queued, being
decoded, running) and the model's measured drain rate, plus the decoders' own backlog at their
measured rate (which is what limits when the model is fast); Retry-After is the time the
model's backlog needs to drain. The first estimate of the rate is the warmup's second run (the first one pays
one-off set-up costs); without warmup, only the queue bound applies until a batch has run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

from service.config import Settings
from service.core.batcher import Batcher
from service.core.deadlines import Deadline
from service.core.errors import Overloaded, Unavailable
from service.core.metrics import Metrics

# Expected waits are averages: admit only what fits in this share of the time left, so that a
# slower batch than average still ends before the deadline.
DEADLINE_HEADROOM = 0.8


class Ticket:
    """One admitted request's share of the in-flight body-byte budget."""

    def __init__(self, admission: "Admission"):
        self._admission = admission
        self.reserved = 0

    def reserve(self, nbytes: int) -> None:
        """Book ``nbytes`` of body; Overloaded when the budget cannot take them."""
        self._admission.reserve_bytes(nbytes)
        self.reserved += nbytes


class Admission:
    def __init__(self, settings: Settings, metrics: Metrics, draining: Callable[[], bool]):
        self._settings = settings
        self._metrics = metrics
        self._draining = draining
        self.inflight = 0
        self.inflight_bytes = 0

    @contextlib.contextmanager
    def request(self):
        """Count a request as in flight for the ``with`` block; refuse it at once when draining or too many are."""
        if self._draining():
            self._refuse("draining")
            raise Unavailable("service is draining (shutting down); retry on another replica", retry_after=1)
        limit = self._settings.max_inflight_requests
        if self.inflight >= limit:
            self._refuse("too_many_requests")
            raise Overloaded(f"{self.inflight} requests in flight (limit {limit}); retry later", retry_after=1)
        ticket = Ticket(self)
        self.inflight += 1
        self._metrics.inflight.set(self.inflight)
        try:
            yield ticket
        finally:
            self.inflight -= 1
            self.inflight_bytes -= ticket.reserved
            self._metrics.inflight.set(self.inflight)

    def reserve_bytes(self, nbytes: int) -> None:
        limit = self._settings.max_inflight_bytes
        if self.inflight_bytes + nbytes > limit:
            self._refuse("memory_budget")
            raise Overloaded(f"request bodies in flight would exceed {limit} bytes; retry later", retry_after=1)
        self.inflight_bytes += nbytes

    def check_work(self, batcher: Batcher, model: str, count: int, deadline: Deadline, decoding_s: float = 0.0) -> None:
        """Overloaded unless ``count`` more images fit model ``model``'s queue and can run before ``deadline``,
        ``decoding_s`` being the expected time to decode them after the images already waiting for the decoders.

        Call it and mark the images as incoming (``batcher.incoming``) with no ``await`` between,
        so that concurrent requests each see the others' images in the backlog.
        """
        if not batcher.has_room(count):
            self._refuse("queue_full")
            raise Overloaded(f"queue of model {model} is full; retry later", retry_after=batcher.retry_after())
        expected = batcher.drain_seconds(count)
        if expected is None:  # no rate measured yet (no warmup, no batch run): the queue bound alone applies
            return
        expected += decoding_s
        budget = deadline.remaining() * DEADLINE_HEADROOM
        if expected > budget:
            self._refuse("deadline_unreachable")
            wait = max(1.0, math.ceil(batcher.drain_seconds() or 0.0))
            raise Overloaded(
                f"model {model} has {batcher.backlog} images ahead, about {expected:.1f} s of work, more than this "
                f"request's deadline allows ({deadline.remaining():.1f} s left); retry later", retry_after=wait)

    def _refuse(self, reason: str) -> None:
        self._metrics.reject(reason)
