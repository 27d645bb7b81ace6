"""The asyncio client: the same calls as FeatureClient, awaited."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import httpx

from service.client.base import ClientBase
from service.client.errors import ServiceError
from service.client.policy import RetryPolicy, ServerLimits, chunk
from service.client.wire import (FeatureResponse, FeatureResult, HealthStatus, ImageInput, encode_image,
                                 encode_images, features_request, merge)


class AsyncFeatureClient(ClientBase):
    """asyncio client of the feature service, with the settings of :class:`FeatureClient`.

    The requests of a chunked image list are sent concurrently, at most ``max_connections``
    at once; the first error cancels the others. ``http_client`` lets tests pass an
    ``httpx.AsyncClient`` (e.g. over ``httpx.ASGITransport``).
    """

    def __init__(self, base_url: str = "http://localhost:8000", api_key: str | None = None, *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, max_connections: int = 10,
                 retry: RetryPolicy | None = None, max_images: int | None = None, max_body_bytes: int | None = None,
                 seed: int | None = None, http_client: httpx.AsyncClient | None = None):
        super().__init__(base_url, api_key, connect_timeout, read_timeout, max_connections, retry, max_images,
                         max_body_bytes, seed)
        self._own = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=base_url, timeout=self._timeout, limits=self._limits)
        self._concurrency = max(1, max_connections)

    async def __aenter__(self) -> "AsyncFeatureClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def _send(self, method: str, path: str, retrying: bool = True, **kw: Any) -> tuple[httpx.Response, int]:
        attempt = 1
        while True:
            try:
                resp = await self._http.request(method, path, headers=self._headers, **kw)
            except httpx.HTTPError as exc:
                wait = self._wait_after_failure(attempt, exc, method, path, retrying)
            else:
                wait = self._wait_after_answer(attempt, resp, retrying)
                if wait is None:
                    return resp, attempt
            await asyncio.sleep(wait)
            attempt += 1

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._checked(*await self._send(method, path, **kw)).json()

    async def limits(self) -> ServerLimits:
        if self._server_limits is not None:
            return self._server_limits
        resp, _ = await self._send("GET", "/info", retrying=False)
        return self._limits_from(resp.status_code, resp.json() if resp.status_code == 200 else None)

    async def features(self, images: ImageInput | Sequence[ImageInput], model: str | None = None,
                       outputs: Sequence[str] = ("cls", "pooled"), dtype: str = "float32", encoding: str = "base64",
                       multipart: bool = False, **options: Any) -> list[FeatureResult]:
        """As :meth:`FeatureClient.features`."""
        return (await self.features_response(images, model, outputs, dtype, encoding, multipart, **options)).results

    async def features_response(self, images: ImageInput | Sequence[ImageInput], model: str | None = None,
                                outputs: Sequence[str] = ("cls", "pooled"), dtype: str = "float32",
                                encoding: str = "base64", multipart: bool = False, **options: Any) -> FeatureResponse:
        blobs = encode_images(images)
        opts = self._features_options(model, outputs, dtype, encoding, options)
        parts = chunk(blobs, await self.limits(), multipart) if len(blobs) > 1 else [(0, blobs)]
        gate = asyncio.Semaphore(self._concurrency)

        async def one(offset: int, part: list[bytes]) -> dict[str, Any]:
            async with gate:
                try:
                    return await self._json("POST", "/features", **features_request(part, opts, multipart))
                except ServiceError as err:
                    raise self._shift(err, offset) from None

        tasks = [asyncio.ensure_future(one(offset, part)) for offset, part in parts]
        try:
            bodies = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # after the first error, the rest are not wanted
        return merge(list(bodies), [offset for offset, _ in parts], dtype)

    async def visualize(self, image: ImageInput, model: str | None = None, compare: bool | None = None,
                        **options: Any) -> bytes:
        req = self._visualize_request(encode_image(image), model, compare, options)
        return self._checked(*await self._send("POST", "/visualize", **req)).content

    async def health(self) -> HealthStatus:
        live, _ = await self._send("GET", "/health/live", retrying=False)
        ready, _ = await self._send("GET", "/health/ready", retrying=False)
        return self._health(live, ready)

    async def models(self) -> dict[str, Any]:
        return await self._json("GET", "/models")

    async def model(self, name: str) -> dict[str, Any]:
        return await self._json("GET", f"/models/{name}")

    async def info(self) -> dict[str, Any]:
        return await self._json("GET", "/info")
