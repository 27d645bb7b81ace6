"""One list of error types the core raises; the API maps each type to an HTTP status (service/api/errors.py).

Every failure a caller can see is a ``ServiceError`` carrying a stable ``type`` string, a
one-line message, for per-image problems the image's ``index`` in the request, and for
refusals that a later try may pass, ``retry_after`` seconds. No error here knows HTTP.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a caller may see; on its own, a bug in the service."""

    type = "internal_error"

    def __init__(self, message: str, *, index: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.retry_after = retry_after


class BadRequest(ServiceError):
    """Malformed request: invalid JSON, invalid base64, empty body, broken multipart, a bad header value."""

    type = "bad_request"


class Unauthorized(ServiceError):
    type = "unauthorized"


class NotFound(ServiceError):
    type = "not_found"


class ModelNotFound(NotFound):
    type = "model_not_found"


class PayloadTooLarge(ServiceError):
    """Body, image count or pixel count over a configured limit."""

    type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    type = "unsupported_media_type"


class InvalidInput(ServiceError):
    """Well-formed request whose options or values are not acceptable."""

    type = "invalid_request"


class InvalidImage(InvalidInput):
    """Bytes that are not a decodable image (corrupt, truncated, not an image)."""

    type = "invalid_image"


class Overloaded(ServiceError):
    """Too much work ahead (queue full, too many requests or bytes in flight, or the deadline cannot be met)."""

    type = "overloaded"


class Unavailable(ServiceError):
    """Not ready or draining: another replica, or this one a little later, can serve it."""

    type = "unavailable"


class ModelUnavailable(Unavailable):
    """The model is still loading, or no model is configured."""

    type = "model_unavailable"


class BackendFailed(ServiceError):
    """The backend failed, and the same request would fail again: retrying does not help."""

    type = "backend_failed"


class ModelFailed(BackendFailed):
    """The model failed to load (its files are broken); it stays failed until the service restarts."""

    type = "model_failed"


class InferenceFailed(BackendFailed):
    """The batch holding this image failed in the backend; the worker keeps serving other batches."""

    type = "inference_failed"


class DeadlineExceeded(ServiceError):
    type = "deadline_exceeded"


class ClientGone(ServiceError):
    """The caller disconnected; nobody reads the answer."""

    type = "client_closed_request"
