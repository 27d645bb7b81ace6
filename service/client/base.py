"""What FeatureClient and AsyncFeatureClient share: settings, request building, answer checking.
The two subclasses add only the sending (blocking or awaited) and the waiting."""

from __future__ import annotations

import random
from typing import Any, Sequence

import httpx

from service.client.errors import ServiceError, TransportError
from service.client.policy import RetryPolicy, ServerLimits
from service.client.wire import HealthStatus, error_from, form_value

_BEFORE_SENDING = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class ClientBase:
    """Settings of a client (see :class:`service.client.FeatureClient` for their meaning)."""

    def __init__(self, base_url: str, api_key: str | None, connect_timeout: float, read_timeout: float,
                 max_connections: int, retry: RetryPolicy | None, max_images: int | None,
                 max_body_bytes: int | None, seed: int | None):
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._given = (max_images, max_body_bytes)
        self._server_limits: ServerLimits | None = None
        if max_images is not None and max_body_bytes is not None:
            self._server_limits = ServerLimits(max_images, max_body_bytes, "given")

    def _limits_from(self, info_status: int | None, info: Any) -> ServerLimits:
        """The limits to chunk by: the ones given to the client win over /info's, which win over the defaults."""
        found = ServerLimits.from_info(info) if info_status == 200 else ServerLimits()
        images, body = self._given
        if images is not None or body is not None:
            found = ServerLimits(images or found.max_images, body or found.max_body_bytes, "given")
        if info_status in (200, 404):  # a 503 or 401 now says nothing about later: ask again next time
            self._server_limits = found
        return found

    def _wait_after_answer(self, attempt: int, resp: httpx.Response, retrying: bool = True) -> float | None:
        """Seconds to wait before resending after ``resp``, or None to take it as final."""
        if not retrying or resp.status_code not in self.retry.retry_statuses or attempt >= self.retry.attempts:
            return None
        return self.retry.wait_s(attempt, error_from(resp.status_code, resp.headers, None).retry_after, self._rng)

    def _wait_after_failure(self, attempt: int, exc: httpx.HTTPError, method: str, path: str,
                            retrying: bool = True) -> float:
        """Seconds to wait after a transport failure; raises TransportError when it is final."""
        if retrying and isinstance(exc, _BEFORE_SENDING) and attempt < self.retry.attempts:
            return self.retry.wait_s(attempt, None, self._rng)
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        raise TransportError(f"{method} {self.base_url.rstrip('/')}{path}: {type(exc).__name__}: {exc}{tries}") from exc

    @staticmethod
    def _checked(resp: httpx.Response, attempts: int, ok: Sequence[int] = (200,)) -> httpx.Response:
        if resp.status_code in ok:
            return resp
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        err = error_from(resp.status_code, resp.headers, body)
        err.attempts = attempts
        raise err

    def _health(self, live: httpx.Response, ready: httpx.Response) -> HealthStatus:
        try:
            detail = ready.json() if ready.content else {}
        except ValueError:
            detail = {}
        if ready.status_code not in (200, 503):
            self._checked(ready, 1)
        return HealthStatus(live.status_code == 200, ready.status_code == 200, detail if isinstance(detail, dict) else {})

    @staticmethod
    def _features_options(model: str | None, outputs: Sequence[str], dtype: str, encoding: str,
                          options: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = {"outputs": list(outputs), "dtype": dtype, "encoding": encoding, **options}
        if model is not None:
            opts["model"] = model
        return opts

    @staticmethod
    def _visualize_request(blob: bytes, model: str | None, compare: bool | None, options: dict[str, Any]) -> dict:
        data = {k: form_value(k, v) for k, v in {"model": model, "compare": compare, **options}.items() if v is not None}
        return {"files": [("image", ("image", blob, "application/octet-stream"))], "data": data}

    @staticmethod
    def _shift(err: ServiceError, offset: int) -> ServiceError:
        return err.shifted(offset) if offset else err
