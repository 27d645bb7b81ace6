"""Overload (429 + Retry-After), deadlines (504), in-flight limits, failed batches and disconnects, through HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
from service_test_utils import b64, decode_array, noise, png, until

from service.api.app import create_app
from service.backends.fake import FakeBackend
from service.config import Settings


def body(marker: int = 100, n: int = 1) -> dict:
    image = noise(56, 56)
    image[0, 0, 0] = marker
    return {"images": [b64(png(image))] * n, "model": "tiny", "outputs": ["cls"]}


async def serve(app):
    """Run the lifespan by hand (httpx's ASGI transport does not) and wait for the models."""
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    await app.state.service.wait_loaded()
    return ctx


def test_a_burst_beyond_capacity_gets_only_200_and_429_with_retry_after(tiny_repo):
    backend = FakeBackend(delay_s=0.05)
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], queue_size=4, max_batch_size=2, max_queue_delay_ms=1),
                     lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/features", json=body())).status_code == 200  # the drain rate is measured
            responses = await asyncio.gather(*(c.post("/features", json=body()) for _ in range(40)))
        await ctx.__aexit__(None, None, None)
        return responses

    responses = asyncio.run(main())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and codes.count(200) >= 4 and codes.count(429) >= 1
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "overloaded"
    metrics = app.state.service.metrics.render().decode()
    assert 'sinder_rejections_total{reason="queue_full"}' in metrics


def test_in_flight_limit_refuses_at_once(tiny_repo):
    backend = FakeBackend(delay_s=0.2)
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], max_inflight_requests=2, max_queue_delay_ms=0),
                     lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            responses = await asyncio.gather(*(c.post("/features", json=body()) for _ in range(5)))
        await ctx.__aexit__(None, None, None)
        return [r.status_code for r in responses]

    codes = asyncio.run(main())
    assert sorted(codes) == [200, 200, 429, 429, 429]


def test_body_bytes_in_flight_are_bounded(tiny_repo):
    backend = FakeBackend(delay_s=0.2)
    one = len(json.dumps(body()).encode())
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], max_queue_delay_ms=0, max_body_bytes=max(1024, one + 100),
                              max_inflight_bytes=max(1024, int(one * 2.5))), lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            responses = await asyncio.gather(*(c.post("/features", json=body()) for _ in range(6)))
            after = await c.post("/features", json=body())
        await ctx.__aexit__(None, None, None)
        return [r.status_code for r in responses], after.status_code, app.state.service.admission.inflight_bytes

    codes, after, left = asyncio.run(main())
    assert sorted(codes) == [200, 200, 429, 429, 429, 429]  # two bodies fit the budget at a time
    assert after == 200 and left == 0  # every reservation was released
    assert 'reason="memory_budget"' in app.state.service.metrics.render().decode()


def test_a_stall_past_the_deadline_is_504_and_the_expired_image_never_runs(tiny_repo):
    backend = FakeBackend()
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], request_timeout_s=0.2, max_batch_size=1,
                              max_queue_delay_ms=0, warmup=False), lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.post("/features", json=body(0))).status_code == 200  # measured fast: both get admitted
            backend.delay_s = 0.4  # then the backend stalls past the deadline
            responses = await asyncio.gather(c.post("/features", json=body(1)), c.post("/features", json=body(2)))
        await asyncio.sleep(0.5)
        await ctx.__aexit__(None, None, None)
        return responses

    first, second = asyncio.run(main())
    assert first.status_code == 504 and second.status_code == 504
    assert first.json()["error"]["type"] == "deadline_exceeded"
    # Decoding runs in threads, so either image may reach the queue first; the other must never run.
    assert len(backend.seen_pixels) == 2 and backend.seen_pixels[1] in (1, 2)


def test_a_failed_batch_is_a_clear_424_and_the_next_request_succeeds(make_client):
    def fail(batch):
        if (batch[:, 0, 0, 0] == 66).any():
            raise RuntimeError("CUDA out of memory (simulated)")

    client = make_client(backend_factory=lambda p: FakeBackend(fail=fail), models=["tiny"])
    bad = client.post("/features", json=body(66))
    assert bad.status_code == 424  # deterministic: not 503, which generic retry policies resend
    assert "retry-after" not in bad.headers
    assert bad.json()["error"]["type"] == "inference_failed" and "out of memory" in bad.json()["error"]["message"]
    assert client.post("/features", json=body(67)).status_code == 200


def test_a_client_that_disconnects_has_its_queued_images_dropped(tiny_repo):
    backend = FakeBackend(delay_s=0.3)
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], max_batch_size=1, max_queue_delay_ms=0,
                              warmup=False), lambda p: backend)

    async def call(payload: dict, disconnect_after: float | None):
        raw = json.dumps(payload).encode()
        sent = {"body": False}
        messages = []

        async def receive():
            if not sent["body"]:
                sent["body"] = True
                return {"type": "http.request", "body": raw, "more_body": False}
            if disconnect_after is None:
                await asyncio.sleep(3600)
            await asyncio.sleep(disconnect_after)
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/features", "raw_path": b"/features", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(task, 5)
        return messages

    async def main():
        ctx = await serve(app)
        busy = asyncio.create_task(call(body(1), None))
        await until(lambda: backend.seen_pixels)  # image 1 is running
        gone = asyncio.create_task(call(body(2, n=3), 0.05))  # queued behind image 1, then the client leaves
        await gone
        await busy
        await asyncio.sleep(0.1)
        after = await call(body(3), None)
        await ctx.__aexit__(None, None, None)
        return after

    after = asyncio.run(main())
    assert after[0]["status"] == 200
    assert backend.seen_pixels == [1, 3]
    assert 'reason="client_gone"' in app.state.service.metrics.render().decode()


def test_draining_refuses_new_work_with_503_and_finishes_accepted_work(tiny_repo):
    backend = FakeBackend(delay_s=0.2)
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], max_queue_delay_ms=0, warmup=False), lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            accepted = asyncio.create_task(c.post("/features", json=body(5, n=2)))
            await until(lambda: backend.seen_pixels)  # accepted and running
            app.state.service.begin_draining()
            refused = await c.post("/features", json=body(6))
            ready = await c.get("/health/ready")
            live = await c.get("/health/live")
            start = time.monotonic()
            done = await accepted
        await ctx.__aexit__(None, None, None)
        return refused, ready, live, done, time.monotonic() - start

    refused, ready, live, done, _ = asyncio.run(main())
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "unavailable"
    assert ready.status_code == 503 and "draining" in ready.json()["reasons"]
    assert live.status_code == 200
    assert done.status_code == 200 and len(done.json()["results"]) == 2
    assert np.array(backend.seen_pixels).tolist() == [5, 5]


def test_a_client_leaving_mid_body_is_not_a_server_error(tiny_repo):
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], warmup=False), lambda p: FakeBackend())
    raw = json.dumps(body()).encode()
    messages = [{"type": "http.request", "body": raw[:100], "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def main():
        ctx = await serve(app)
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/features", "raw_path": b"/features", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("t", 80)}
        await app(scope, receive, send)
        await ctx.__aexit__(None, None, None)

    asyncio.run(main())
    assert sent[0]["status"] == 499
    assert app.state.service.admission.inflight == 0 and app.state.service.admission.inflight_bytes == 0


def test_concurrent_requests_share_batches_and_each_gets_its_own_result(tiny_repo):
    backend = FakeBackend(delay_s=0.05)
    app = create_app(Settings(model_repo=tiny_repo, models=["tiny"], max_batch_size=8, max_queue_delay_ms=50,
                              warmup=False), lambda p: backend)

    async def main():
        ctx = await serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            responses = await asyncio.gather(*(c.post("/features", json=body(10 + i)) for i in range(8)))
        await ctx.__aexit__(None, None, None)
        return responses

    responses = asyncio.run(main())
    sizes = [r.json()["results"][0]["timing"]["batch_size"] for r in responses]
    assert max(sizes) > 1 and sum(shape[0] for shape in backend.batches) == 8
    for i, r in enumerate(responses):
        cls = decode_array(r.json()["results"][0]["cls"])
        alone = backend.run(np.stack([_pixels(10 + i)]))["cls_token"][0]
        np.testing.assert_allclose(cls, alone, rtol=1e-5)


def _pixels(marker: int) -> np.ndarray:
    image = noise(56, 56)
    image[0, 0, 0] = marker
    return image
