"""The load generator against a stub server on loopback: bounded, self-stopping, counts right."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.loadgen import ensure_loopback, run_load_processes, run_load_sync
from bench.server import free_port
from bench.service_bench import histogram_sum_count


def _stub() -> FastAPI:
    app = FastAPI()
    app.state.n = 0
    app.state.inflight = 0
    app.state.peak = 0

    @app.post("/ok")
    async def ok(request: Request):
        app.state.n += 1
        app.state.inflight += 1
        app.state.peak = max(app.state.peak, app.state.inflight)
        await asyncio.sleep(0.005)
        app.state.inflight -= 1
        return {"results": [1]}

    @app.post("/mixed")
    async def mixed(request: Request):
        app.state.n += 1
        if app.state.n % 3 == 0:
            return JSONResponse({"error": {"type": "queue_full", "message": "full"}}, 429, headers={"Retry-After": "1"})
        return {"results": [1]}

    @app.post("/slow")
    async def slow(request: Request):
        await asyncio.sleep(5)
        return {}

    return app


@pytest.fixture(scope="module")
def stub():
    app = _stub()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_stops_at_max_requests_and_uses_the_concurrency(stub):
    app, url = stub
    app.state.n = 0
    res = run_load_sync(f"{url}/ok", b"{}", concurrency=4, max_requests=40, max_seconds=30, images_per_request=2)
    assert res.sent == 40 and res.ok == 40 and app.state.n == 40
    assert res.images_ok == 80 and len(res.latencies) == 40
    assert 1 < app.state.peak <= 4
    assert res.images_per_s > 0


def test_counts_statuses_separately(stub):
    app, url = stub
    app.state.n = 0
    res = run_load_sync(f"{url}/mixed", b"{}", concurrency=1, max_requests=9, max_seconds=30)
    assert res.statuses == {200: 6, 429: 3}
    assert len(res.latencies) == 6


def test_stops_by_time_and_times_out_slow_requests(stub):
    _, url = stub
    t0 = time.monotonic()
    res = run_load_sync(f"{url}/slow", b"{}", concurrency=2, max_requests=1000, max_seconds=0.2, request_timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert res.sent == 2 and res.ok == 0 and res.errors.get("TimeoutError", 0) + res.errors.get("ReadTimeout", 0) == 2


def test_connection_refused_is_counted_not_raised():
    res = run_load_sync(f"http://127.0.0.1:{free_port()}/x", b"{}", concurrency=1, max_requests=3, max_seconds=5)
    assert res.sent == 3 and sum(res.errors.values()) == 3


@pytest.mark.parametrize("url", ["http://10.1.2.3:8000/features", "http://192.168.0.1/x", "http://[2001:db8::1]/x"])
def test_refuses_non_loopback_targets(url):
    with pytest.raises(ValueError, match="loopback only"):
        ensure_loopback(url)
    with pytest.raises(ValueError):
        run_load_sync(url, b"{}", max_requests=1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/x", "http://localhost:8000/x", "http://[::1]:9/x"])
def test_accepts_loopback(url):
    ensure_loopback(url)


def test_histogram_parsing_by_model():
    text = "\n".join([
        "# HELP sinder_batch_size Images per batch.",
        "# TYPE sinder_batch_size histogram",
        'sinder_batch_size_bucket{le="1.0",model="a"} 1.0',
        'sinder_batch_size_sum{model="a"} 30.0',
        'sinder_batch_size_count{model="a"} 5.0',
        'sinder_batch_size_sum{model="b:2"} 4.0',
        'sinder_batch_size_count{model="b:2"} 4.0',
        'sinder_batch_size_sum{model="ab:1"} 100.0',
        'sinder_batch_size_count{model="ab:1"} 1.0',
        'sinder_queue_duration_seconds_sum{model="a"} 9.0',
    ])
    assert histogram_sum_count(text, "batch_size", "a") == (30.0, 5.0)
    assert histogram_sum_count(text, "batch_size", "b") == (4.0, 4.0)  # "name:version" label
    assert histogram_sum_count(text, "batch_size") == (134.0, 10.0)


def test_several_generator_processes_add_up(stub):
    app, url = stub
    app.state.n = 0
    res = run_load_processes(f"{url}/ok", b"{}", processes=2, concurrency=2, max_requests=10, max_seconds=30,
                             images_per_request=3)
    assert res.sent == 20 and res.statuses == {200: 20} and app.state.n == 20
    assert res.images_ok == 60 and len(res.latencies) == 20 and res.seconds > 0
