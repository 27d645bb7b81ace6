"""One list of error types; the API maps each to one HTTP status.

Every failure a caller can see is a ``ServiceError`` carrying a stable ``type`` string,
a one-line message and, for per-image problems, the image's ``index`` in the request.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a caller may see. ``status`` is the HTTP status it maps to."""

    type = "internal_error"
    status = 500

    def __init__(self, message: str, *, index: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.retry_after = retry_after


class BadRequest(ServiceError):
    """Malformed request: invalid JSON, invalid base64, empty body, broken multipart."""

    type = "bad_request"
    status = 400


class Unauthorized(ServiceError):
    type = "unauthorized"
    status = 401


class NotFound(ServiceError):
    type = "not_found"
    status = 404


class ModelNotFound(NotFound):
    type = "model_not_found"


class PayloadTooLarge(ServiceError):
    """Body, image count or pixel count over a configured limit."""

    type = "payload_too_large"
    status = 413


class UnsupportedMediaType(ServiceError):
    type = "unsupported_media_type"
    status = 415


class InvalidInput(ServiceError):
    """Well-formed request whose options or values are not acceptable."""

    type = "invalid_request"
    status = 422


class InvalidImage(InvalidInput):
    """Bytes that are not a decodable image (corrupt, truncated, not an image)."""

    type = "invalid_image"


class Overloaded(ServiceError):
    """Queue full or too many requests in flight: retry after ``retry_after`` seconds."""

    type = "overloaded"
    status = 429


class Unavailable(ServiceError):
    """Not ready, draining, or the model failed to load."""

    type = "unavailable"
    status = 503


class ModelUnavailable(Unavailable):
    type = "model_unavailable"


class InferenceFailed(Unavailable):
    """The batch holding this image failed in the backend; the worker keeps serving."""

    type = "inference_failed"


class DeadlineExceeded(ServiceError):
    type = "deadline_exceeded"
    status = 504


class ClientGone(ServiceError):
    """The caller disconnected; nobody reads the answer (nginx's 499, never sent to anyone)."""

    type = "client_closed_request"
    status = 499


# Every status the API can answer with, for the OpenAPI error documentation.
ERROR_STATUSES = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidInput,
    429: Overloaded,
    500: ServiceError,
    503: Unavailable,
    504: DeadlineExceeded,
}
