"""The blocking client."""

from __future__ import annotations

import time
from typing import Any, Sequence

import httpx

from service.client.base import ClientBase
from service.client.errors import ServiceError
from service.client.policy import RetryPolicy, ServerLimits, chunk
from service.client.wire import (FeatureResponse, FeatureResult, HealthStatus, ImageInput, encode_image,
                                 encode_images, features_request, merge)


class FeatureClient(ClientBase):
    """Blocking client of the feature service; one instance is safe to share between threads.

    ``connect_timeout`` and ``read_timeout`` bound each attempt; ``max_connections`` bounds
    the pool; ``retry`` says when 429/503 answers and connection failures are retried (see
    :class:`RetryPolicy`; ``RetryPolicy(attempts=1)`` never retries). Long image lists are
    split into requests within the service's ``max_images`` and ``max_body_bytes``, read once
    from ``GET /info`` (the service's defaults when it has none), unless given here.
    ``http_client`` lets tests pass e.g. FastAPI's TestClient (then the timeouts and limits
    are that client's).
    """

    def __init__(self, base_url: str = "http://localhost:8000", api_key: str | None = None, *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_connections: int = 10,
                 retry: RetryPolicy | None = None, max_images: int | None = None, max_body_bytes: int | None = None,
                 seed: int | None = None, http_client: httpx.Client | None = None):
        super().__init__(base_url, api_key, connect_timeout, read_timeout, max_connections, retry, max_images,
                         max_body_bytes, seed)
        self._own = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=self._timeout, limits=self._limits)

    def __enter__(self) -> "FeatureClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def _send(self, method: str, path: str, retrying: bool = True, **kw: Any) -> tuple[httpx.Response, int]:
        """The final answer and the number of attempts it took."""
        attempt = 1
        while True:
            try:
                resp = self._http.request(method, path, headers=self._headers, **kw)
            except httpx.HTTPError as exc:
                wait = self._wait_after_failure(attempt, exc, method, path, retrying)
            else:
                wait = self._wait_after_answer(attempt, resp, retrying)
                if wait is None:
                    return resp, attempt
            time.sleep(wait)
            attempt += 1

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._checked(*self._send(method, path, **kw)).json()

    def limits(self) -> ServerLimits:
        """The request limits chunking uses (GET /info once; the service's defaults if it has no /info)."""
        if self._server_limits is not None:
            return self._server_limits
        resp, _ = self._send("GET", "/info", retrying=False)
        return self._limits_from(resp.status_code, resp.json() if resp.status_code == 200 else None)

    def features(self, images: ImageInput | Sequence[ImageInput], model: str | None = None,
                 outputs: Sequence[str] = ("cls", "pooled"), dtype: str = "float32", encoding: str = "base64",
                 multipart: bool = False, **options: Any) -> list[FeatureResult]:
        """Features of ``images`` (one image or a list), in the order given.

        ``outputs`` from ``cls``, ``pooled``, ``patch_tokens``, ``registers``, ``diagnostics``;
        ``options`` go to the request as they are (``resolution``, ``short_side``, ``resize``,
        ``diagnostics_maps``). ``multipart=True`` uploads files instead of base64 in JSON (a
        quarter fewer bytes). Raises :class:`ServiceError` on an error answer, its ``index``
        counted over ``images``.
        """
        return self.features_response(images, model, outputs, dtype, encoding, multipart, **options).results

    def features_response(self, images: ImageInput | Sequence[ImageInput], model: str | None = None,
                          outputs: Sequence[str] = ("cls", "pooled"), dtype: str = "float32",
                          encoding: str = "base64", multipart: bool = False, **options: Any) -> FeatureResponse:
        """As :meth:`features`, with the model, version and raw bodies of the responses."""
        blobs = encode_images(images)
        opts = self._features_options(model, outputs, dtype, encoding, options)
        parts = chunk(blobs, self.limits(), multipart) if len(blobs) > 1 else [(0, blobs)]
        bodies = []
        for offset, part in parts:
            try:
                bodies.append(self._json("POST", "/features", **features_request(part, opts, multipart)))
            except ServiceError as err:
                raise self._shift(err, offset) from None
        return merge(bodies, [offset for offset, _ in parts], dtype)

    def visualize(self, image: ImageInput, model: str | None = None, compare: bool | None = None,
                  **options: Any) -> bytes:
        """POST /visualize: a PNG (bytes) of the image's token norms, defect tokens and PCA colours."""
        req = self._visualize_request(encode_image(image), model, compare, options)
        return self._checked(*self._send("POST", "/visualize", **req)).content

    def health(self) -> HealthStatus:
        """Liveness and readiness (a 503 from /health/ready means not ready, not an error; never retried)."""
        live, _ = self._send("GET", "/health/live", retrying=False)
        ready, _ = self._send("GET", "/health/ready", retrying=False)
        return self._health(live, ready)

    def models(self) -> dict[str, Any]:
        """GET /models: every served model with its state, summary and execution provider."""
        return self._json("GET", "/models")

    def model(self, name: str) -> dict[str, Any]:
        """GET /models/{name} (``name`` or ``name:version``); a ServiceError with status 404 when unknown."""
        return self._json("GET", f"/models/{name}")

    def info(self) -> dict[str, Any]:
        """GET /info: models, limits and version of the service (a ServiceError 404 on versions without it)."""
        return self._json("GET", "/info")
