"""Retry timing, the service's request limits, and chunking a long image list: the rules both
clients share, free of HTTP so that they are tested alone."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

# The service's defaults (service/config.py), used when it has no GET /info (older versions).
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
_JSON_OVERHEAD = 1024  # the options and brackets of a JSON body
_PART_OVERHEAD = 256  # headers of one multipart part


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again, and after how long.

    Retried: answers 429 (queue full) and 503 (loading, draining), and failures before the
    request reached the service (connect error or timeout, no free pooled connection). Not
    retried: read timeouts (the service may still be working on it) and every other status
    (a 4xx will not change; a 500 is deterministic). The wait honours ``Retry-After`` (plus up
    to ``jitter`` of it, so that many clients do not return together); without one it is an
    exponential backoff from ``backoff_s`` with jitter; either is capped at ``max_wait_s``.
    """

    attempts: int = 4  # tries in all, the first included; 1 never retries
    backoff_s: float = 0.25
    max_wait_s: float = 10.0
    jitter: float = 0.25
    retry_statuses: frozenset[int] = frozenset({429, 503})

    def __post_init__(self):
        if self.attempts < 1 or self.backoff_s < 0 or self.max_wait_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid retry policy {self}")

    def wait_s(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the failed ``attempt`` (1 for the first try)."""
        u = (rng or random).random()
        if retry_after is not None and retry_after >= 0:
            return min(self.max_wait_s, retry_after * (1 + self.jitter * u))
        backoff = min(self.max_wait_s, self.backoff_s * 2 ** (attempt - 1))
        return backoff * (1 - self.jitter * u)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ServerLimits:
    """How much one request may carry; from GET /info, or the service's defaults without it."""

    max_images: int = DEFAULT_MAX_IMAGES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    source: str = "defaults"  # "info", "defaults" or "given"

    @classmethod
    def from_info(cls, info: Any) -> "ServerLimits":
        """The limits an /info body states (top level or in a nested object such as ``limits``)."""
        found: dict[str, int] = {}
        scopes = [info] + [v for v in info.values() if isinstance(v, Mapping)] if isinstance(info, Mapping) else []
        for scope in scopes:
            for key in ("max_images", "max_body_bytes"):
                value = scope.get(key)
                if key not in found and isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    found[key] = value
        return cls(found.get("max_images", DEFAULT_MAX_IMAGES), found.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
                   "info" if found else "defaults")


def chunk(blobs: list[bytes], limits: ServerLimits, multipart: bool) -> list[tuple[int, list[bytes]]]:
    """Split encoded images into requests within ``limits``: ``[(offset of the first image, images)]``.

    Greedy, order kept. An image too big for any request goes alone: the service's 413 then
    names it, rather than the client guessing.
    """
    budget = max(1, int(limits.max_body_bytes) - _JSON_OVERHEAD)
    out: list[tuple[int, list[bytes]]] = []
    current: list[bytes] = []
    size = 0
    start = 0
    for i, blob in enumerate(blobs):
        cost = len(blob) + _PART_OVERHEAD if multipart else 4 * (-(-len(blob) // 3)) + 4
        if current and (len(current) >= limits.max_images or size + cost > budget):
            out.append((start, current))
            current, size, start = [], 0, i
        current.append(blob)
        size += cost
    if current:
        out.append((start, current))
    return out
