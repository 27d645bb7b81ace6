"""Shared dependencies: the service object, the optional bearer API key, the request's deadline."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.core.deadlines import Deadline
from service.core.errors import Unauthorized
from service.core.service import FeatureService

_bearer = HTTPBearer(auto_error=False, description="Needed only when the service is started with SINDER_API_KEY.")

DEADLINE_HEADER = "X-Request-Timeout"


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
# thread, a thread hop per dependency per request (measured: most of the CPU of a small request).
async def get_service(request: Request) -> FeatureService:
    return request.app.state.service


async def require_api_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    key = request.app.state.service.settings.api_key
    if key is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        request.app.state.service.metrics.reject("unauthorized")
        sent = request.headers.get("authorization", "").strip()
        scheme = sent.split()[0] if sent else ""
        if scheme and scheme.lower() != "bearer":
            raise Unauthorized(f"API key must be sent as 'Authorization: Bearer <key>', not as {scheme[:20]!r} credentials")
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not hmac.compare_digest(credentials.credentials.encode(), key.get_secret_value().encode()):
        request.app.state.service.metrics.reject("unauthorized")
        raise Unauthorized("wrong API key")


async def request_deadline(
    timeout: Annotated[float | None, Header(
        alias=DEADLINE_HEADER, gt=0,
        description=("This request's own deadline in seconds, from its arrival; applies when shorter than "
                     "SINDER_REQUEST_TIMEOUT_S (default 30). A request whose images cannot be expected to run "
                     "before its deadline is refused at once (429)."))] = None,
    service: FeatureService = Depends(get_service),
) -> Deadline:
    return service.deadline(timeout)


async def wait_disconnect(request: Request) -> None:
    """Returns when the client goes away (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
