"""One error envelope, ``{"error": {"type", "message", "index"}}``, and the one table from error type to status.

503 means "not ready or draining: try another replica or later", which generic retry policies
resend; a failure that would repeat on the same request (a broken model, a batch the backend
rejects) is 424, which they do not, following text-embeddings-inference's backend errors.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.v2.response import error_body
from service.core import errors as e

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's code for a caller that went away; never sent to anyone

# Error type -> HTTP status. A subclass not listed takes its nearest listed base's status.
STATUS: dict[type[e.ServiceError], int] = {
    e.BadRequest: 400,
    e.Unauthorized: 401,
    e.NotFound: 404,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.InvalidInput: 422,
    e.BackendFailed: 424,
    e.Overloaded: 429,
    e.ServiceError: 500,
    e.Unavailable: 503,
    e.DeadlineExceeded: 504,
    e.ClientGone: CLIENT_CLOSED,
}

# What each status means, for the OpenAPI error documentation (README's table says the same).
DESCRIPTIONS = {
    400: "Malformed request: invalid JSON or base64, empty body, broken multipart.",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`).",
    404: "Unknown model or version.",
    413: "Body, image count or an image's pixel count over the configured limit.",
    415: "Content type is neither application/json nor multipart/form-data, or a Content-Encoding other than gzip or "
         "deflate.",
    422: "Invalid option, value or `X-Request-Timeout`, or an image that cannot be decoded (`index` names it).",
    424: "The backend failed and would fail again on the same request: the model failed to load (`model_failed`) or "
         "the batch failed in the backend (`inference_failed`). Not worth retrying unchanged.",
    429: "Too much work ahead: queue full, too many requests or bytes in flight, or the images cannot be expected to "
         "run before the request's deadline; retry after `Retry-After` seconds (from the measured drain rate).",
    500: "A bug in the service.",
    503: "Not ready (models loading, none loaded) or draining; retry after `Retry-After`, or on another replica.",
    504: "The request deadline passed before its images ran (only when the machine stalls: admission refuses with 429 "
         "what it cannot expect to finish in time).",
}


def status_of(exc: e.ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


class ErrorBody(BaseModel):
    type: str = Field(description="Stable machine-readable error type, e.g. invalid_image, overloaded, model_not_found.")
    message: str = Field(description="One line saying what was wrong.")
    index: int | None = Field(None, description="Index of the offending image in the request, when one image is at fault.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries documenting each error status with the envelope."""
    out = {}
    for code in codes:
        entry = {"model": ErrorResponse, "description": DESCRIPTIONS[code]}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
        out[code] = entry
    return out


def envelope(status: int, type_: str, message: str, index: int | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message, "index": index}}, status_code=status, headers=headers)


def error_status_headers(exc: e.ServiceError) -> tuple[int, dict]:
    """The HTTP status and headers (Retry-After, WWW-Authenticate) of an error, whatever the body's format."""
    status = status_of(exc)
    headers = {}
    if exc.retry_after is not None or status in (429, 503):
        headers["Retry-After"] = str(max(1, int(round(exc.retry_after or 1))))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return status, headers


def validation_message(exc: RequestValidationError) -> tuple[str, int | None]:
    parts, index = [], None
    for err in exc.errors()[:3]:
        loc = [p for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        if index is None and len(loc) >= 2 and loc[0] == "images" and isinstance(loc[1], int):
            index = loc[1]
        where = ".".join(str(p) for p in loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", index


V2_PREFIX = "/v2"


def speaks_v2(request: Request) -> bool:
    """KServe v2 paths answer errors in the protocol's own body, ``{"error": "<message>"}``, which its clients read."""
    path = request.url.path
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def _answer(request: Request, status: int, type_: str, message: str, index: int | None = None,
            headers: dict | None = None) -> Response:
    if speaks_v2(request):
        return Response(error_body(message), status_code=status, headers=headers, media_type="application/json")
    return envelope(status, type_, message, index, headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.ServiceError)
    async def _service_error(request: Request, exc: e.ServiceError):
        status, headers = error_status_headers(exc)
        if status == CLIENT_CLOSED:  # nobody reads this
            return Response(status_code=CLIENT_CLOSED)
        return _answer(request, status, exc.type, exc.message, exc.index, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, index = validation_message(exc)
        return _answer(request, 422, "invalid_request", message, index)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        types = {404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code in (404, 405):  # say which route, and for a v2 client that it is not served here
            message = f"{message}: {request.method} {request.url.path}"
        return _answer(request, exc.status_code, types.get(exc.status_code, "http_error"), message, None, exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _answer(request, 500, "internal_error",
                       f"internal error ({type(exc).__name__}); this is a bug, please report it")
