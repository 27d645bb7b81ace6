"""Retries, chunking by the service's limits and transport errors, for both clients, against
the stub of the HTTP contract (client_stub.py). Sleeps are recorded, never waited."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from client_stub import features_of, stub_app
from fastapi.testclient import TestClient

from service.client import (AsyncFeatureClient, FeatureClient, FeatureClientError, RetryPolicy, ServiceError,
                            TransportError)

RETRY = RetryPolicy(attempts=4, backoff_s=0.1, max_wait_s=5.0, jitter=0.25)


def images(n: int) -> list[np.ndarray]:
    return [np.full((14 + i, 28, 3), 10 * i, np.uint8) for i in range(n)]


@pytest.fixture()
def app():
    return stub_app()


@pytest.fixture()
def waits(monkeypatch) -> list[float]:
    """Every sleep either client asks for, recorded instead of slept."""
    seen: list[float] = []

    async def fake_async_sleep(s):
        seen.append(s)

    monkeypatch.setattr("service.client.sync.time.sleep", seen.append)
    monkeypatch.setattr("service.client.aio.asyncio.sleep", fake_async_sleep)
    return seen


def run_both(app, call, **kw):
    """``call(client)`` with the blocking client, then awaited with the async one: both results."""
    with TestClient(app) as http:
        sync = call(FeatureClient(http_client=http, retry=RETRY, seed=0, **kw))

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stub") as http:
            return await call(AsyncFeatureClient(http_client=http, retry=RETRY, seed=0, **kw))

    return sync, asyncio.run(go())


def test_429_and_503_are_retried_honouring_retry_after(app, waits):
    def call(client):
        app.state.flags["fail"] = [(429, 1), (503, 2)]
        return client.features(images(1), outputs=("cls",))

    sync, aio = run_both(app, call)
    for results in (sync, aio):
        np.testing.assert_allclose(results[0].cls, features_of(images(1)[0])["cls"], rtol=1e-6)
    assert len(waits) == 4
    for wait, asked in zip(waits, [1, 2, 1, 2]):
        assert asked <= wait <= asked * 1.25


def test_without_retry_after_the_backoff_grows(app, waits):
    def call(client):
        app.state.flags["fail"] = [(503, None)] * 3
        return client.features(images(1))

    run_both(app, call)
    for per_client in (waits[:3], waits[3:]):
        assert [0.075 <= w <= 0.1 for w in per_client[:1]] == [True]
        assert per_client[1] > per_client[0] and per_client[2] > per_client[1]


def test_retries_stop_after_the_attempts_and_the_error_says_so(app, waits):
    app.state.flags["fail"] = [(429, 0)] * 10
    with TestClient(app) as http, pytest.raises(ServiceError) as err:
        FeatureClient(http_client=http, retry=RETRY).features(images(1))
    assert err.value.status == 429 and err.value.attempts == 4 and "after 4 attempts" in str(err.value)
    assert len(waits) == 3


@pytest.mark.parametrize("status", [400, 422, 500])
def test_other_errors_are_not_retried(app, waits, status):
    app.state.flags["fail"] = [(status, 1)]
    with TestClient(app) as http, pytest.raises(ServiceError) as err:
        FeatureClient(http_client=http, retry=RETRY).features(images(1))
    assert err.value.status == status and err.value.attempts == 1 and waits == []
    assert isinstance(err.value, FeatureClientError)


def test_long_lists_are_chunked_by_the_limits_from_info(app, waits):
    app.state.flags["info"] = {"version": "x", "limits": {"max_images": 2, "max_body_bytes": 10**6}}
    imgs = images(5)

    def call(client):
        return client.features(imgs, outputs=("cls",))

    sync, aio = run_both(app, call)
    assert app.state.seen == [2, 2, 1, 2, 2, 1]
    for results in (sync, aio):
        assert [r.index for r in results] == [0, 1, 2, 3, 4]
        for r, img in zip(results, imgs):
            np.testing.assert_allclose(r.cls, features_of(img)["cls"], rtol=1e-6)


def test_without_info_the_service_defaults_or_the_given_limit_apply(app):
    with TestClient(app) as http:
        client = FeatureClient(http_client=http)
        assert client.limits().source == "defaults" and client.limits().max_images == 64
        client.features(images(5))
        given = FeatureClient(http_client=http, max_images=3)
        given.features(images(5))
    assert app.state.seen == [5, 3, 2]


def test_an_error_in_a_later_chunk_names_the_image_in_the_whole_list(app):
    app.state.flags["info"] = {"max_images": 2}
    imgs: list = images(5)
    imgs[3] = b"not an image"
    with TestClient(app) as http, pytest.raises(ServiceError) as err:
        FeatureClient(http_client=http).features(imgs)
    assert err.value.status == 400 and err.value.index == 3 and "image 3" in str(err.value)

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://stub") as http:
            await AsyncFeatureClient(http_client=http).features(imgs)

    with pytest.raises(ServiceError) as err:
        asyncio.run(go())
    assert err.value.status == 400 and err.value.index == 3


def test_connection_failures_are_retried_then_raise_a_transport_error(waits):
    calls = []

    def handler(request):
        calls.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://nowhere")
    with pytest.raises(TransportError, match="after 4 attempts") as err:
        FeatureClient(http_client=http, retry=RETRY, max_images=4, max_body_bytes=10**6).features(images(1))
    assert isinstance(err.value, FeatureClientError) and len(calls) == 4 and len(waits) == 3


def test_read_timeouts_are_not_retried(waits):
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=request)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://slow")
    with pytest.raises(TransportError, match="ReadTimeout"):
        FeatureClient(http_client=http, retry=RETRY, max_images=4, max_body_bytes=10**6).features(images(1))
    assert calls == [1] and waits == []


def test_async_visualize_models_and_health(app):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://stub") as http:
            client = AsyncFeatureClient(http_client=http)
            png = await client.visualize(images(1)[0], compare=True)
            models = await client.models()
            health = await client.health()
            return png, models, health

    png, models, health = asyncio.run(go())
    assert png.startswith(b"\x89PNG") and models["models"][0]["name"] == "demo" and health.ready


def test_timeouts_and_connection_limits_reach_httpx():
    client = FeatureClient("http://127.0.0.1:9", connect_timeout=1.5, read_timeout=7.0, max_connections=3)
    try:
        assert client._http.timeout.connect == 1.5 and client._http.timeout.read == 7.0
        pool = client._http._transport._pool
        assert pool._max_connections == 3
    finally:
        client.close()
