"""The client's errors: one base class, three kinds.

    FeatureClientError            catch this for "the call failed"
    ├── ClientInputError          refused before sending (unreadable path, bad array, no images); also a ValueError
    ├── ServiceError              the service answered with an error envelope (status, type, message, index)
    └── TransportError            no answer: connection refused or reset, timeout (after the retries)
"""

from __future__ import annotations

from typing import Any


class FeatureClientError(Exception):
    """Base class of every error the client raises."""


class ClientInputError(FeatureClientError, ValueError):
    """An input the client cannot send (unreadable path, unsupported array shape or type, no images)."""


class ServiceError(FeatureClientError):
    """An error answer of the service, from its envelope ``{"error": {"type", "message", "index"}}``.

    ``status`` is the HTTP status; ``index`` names the image a 4xx is about, counted over the
    whole list given to the client (None when the request as a whole was refused);
    ``retry_after`` is the seconds a 429/503 asked to wait; ``attempts`` how many times the
    request was sent (more than 1 when 429/503 answers were retried).
    """

    def __init__(self, status: int, type: str, message: str, index: int | None = None,
                 retry_after: float | None = None, body: Any = None, attempts: int = 1):
        self.status = status
        self.type = type
        self.message = message
        self.index = index
        self.retry_after = retry_after
        self.body = body
        self.attempts = attempts
        super().__init__(status, type, message, index)

    def __str__(self) -> str:
        where = f" (image {self.index})" if self.index is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"HTTP {self.status} {self.type}: {self.message}{where}{tries}"

    def shifted(self, offset: int) -> "ServiceError":
        """The same error with ``index`` counted from ``offset`` (a chunk of a longer image list)."""
        index = None if self.index is None else self.index + offset
        return ServiceError(self.status, self.type, self.message, index, self.retry_after, self.body, self.attempts)


class TransportError(FeatureClientError):
    """The request got no HTTP answer: connect failure, read timeout, connection reset."""
