"""A burst against a model of known speed gets 200 or 429 at once, never a 504; X-Request-Timeout shortens a deadline."""

from __future__ import annotations

import asyncio

import httpx
from service_test_utils import b64, noise, png

from service.api.app import create_app
from service.backends.fake import FakeBackend
from service.config import Settings

DELAY_S = 0.1  # the fake model's speed: one image per batch, 10 images/s
# Room for about 24 images ahead, with admission's headroom. The headroom (a fifth of the deadline)
# and the answer's reserve are what absorb a stalled event loop on a busy machine: a deadline of
# several batches keeps them well above a scheduler hiccup.
TIMEOUT_S = 3.0


def body(marker: int) -> dict:
    image = noise(56, 56)
    image[0, 0, 0] = marker
    return {"images": [b64(png(image))], "model": "tiny", "outputs": ["cls"]}


def make_app(tiny_repo, backend: FakeBackend):
    settings = Settings(model_repo=tiny_repo, models=["tiny"], max_batch_size=1, max_queue_delay_ms=0,
                        request_timeout_s=TIMEOUT_S)
    return create_app(settings, lambda p: backend)


async def serving(app, work):
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    await app.state.service.wait_loaded()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=30) as c:
            return await work(c)
    finally:
        await ctx.__aexit__(None, None, None)


def test_a_burst_gets_only_200_and_429_and_every_200_within_its_deadline(tiny_repo):
    backend = FakeBackend(delay_s=DELAY_S)
    app = make_app(tiny_repo, backend)

    async def burst(c):
        return await asyncio.gather(*(c.post("/features", json=body(i)) for i in range(60)))

    responses = asyncio.run(serving(app, burst))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, sorted(set(codes))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    # About TIMEOUT_S * headroom / DELAY_S images fit; the queue (256) alone would have taken all 60.
    assert 5 <= len(ok) <= 40 and refused
    assert all(r.json()["timing"]["total_ms"] <= TIMEOUT_S * 1000 for r in ok)
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]["type"] == "overloaded"
    assert len(backend.seen_pixels) == 2 + len(ok)  # two warmup runs; no refused image ever ran
    assert 'reason="deadline_unreachable"' in app.state.service.metrics.render().decode()


def test_a_request_timeout_header_shortens_the_deadline(tiny_repo):
    backend = FakeBackend(delay_s=DELAY_S)
    app = make_app(tiny_repo, backend)

    async def work(c):
        ahead = [asyncio.create_task(c.post("/features", json=body(i))) for i in range(8)]  # ~0.8 s of work
        await asyncio.sleep(0.05)
        short = await c.post("/features", json=body(99), headers={"X-Request-Timeout": "0.1"})
        bad = await c.post("/features", json=body(98), headers={"X-Request-Timeout": "soon"})
        zero = await c.post("/features", json=body(97), headers={"X-Request-Timeout": "0"})
        done = await asyncio.gather(*ahead)
        longer = await c.post("/features", json=body(96), headers={"X-Request-Timeout": "3600"})
        return short, bad, zero, done, longer

    short, bad, zero, done, longer = asyncio.run(serving(app, work))
    assert short.status_code == 429 and "deadline" in short.json()["error"]["message"]
    assert bad.status_code == 422 and zero.status_code == 422
    assert "X-Request-Timeout" in bad.json()["error"]["message"]
    assert all(r.status_code == 200 for r in done)
    assert longer.status_code == 200  # a longer deadline is capped at the service's, not refused


def test_visualize_takes_the_same_admission_path_as_features(tiny_repo):
    backend = FakeBackend(delay_s=DELAY_S)
    app = make_app(tiny_repo, backend)
    picture = {"image": body(0)["images"][0], "model": "tiny", "compare": False}

    async def work(c):
        ahead = [asyncio.create_task(c.post("/features", json=body(i))) for i in range(8)]
        await asyncio.sleep(0.05)
        refused = await c.post("/visualize", json=picture, headers={"X-Request-Timeout": "0.1"})
        await asyncio.gather(*ahead)
        drawn = await c.post("/visualize", json=picture)
        return refused, drawn

    refused, drawn = asyncio.run(serving(app, work))
    assert refused.status_code == 429 and refused.headers["content-type"].startswith("application/json")
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"


def test_v2_timeout_parameter_in_microseconds_shortens_the_deadline(tiny_repo):
    backend = FakeBackend(delay_s=DELAY_S)
    app = make_app(tiny_repo, backend)
    pixels = {"name": "images", "datatype": "UINT8", "shape": [1, 56, 56, 3], "data": [0] * (56 * 56 * 3)}

    def infer(timeout):
        parameters = {} if timeout is None else {"timeout": timeout}
        return {"inputs": [pixels], "parameters": parameters}

    async def work(c):
        ahead = [asyncio.create_task(c.post("/features", json=body(i))) for i in range(8)]  # ~0.8 s of work
        await asyncio.sleep(0.05)
        short = await c.post("/v2/models/tiny/infer", json=infer(100_000))  # 0.1 s
        bad = await c.post("/v2/models/tiny/infer", json=infer("soon"))
        await asyncio.gather(*ahead)
        enough = await c.post("/v2/models/tiny/infer", json=infer(3_000_000))
        return short, bad, enough

    short, bad, enough = asyncio.run(serving(app, work))
    assert short.status_code == 429 and "deadline" in short.json()["error"]
    assert bad.status_code == 422 and "parameters.timeout" in bad.json()["error"]
    assert enough.status_code == 200
