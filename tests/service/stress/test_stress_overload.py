"""A burst of 10x the service's capacity: only 200 and 429 (with Retry-After), no hang, memory bounded."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import httpx
import pytest
import tiny_repo
from stress_helpers import noise, png

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`

CAPACITY = 6  # SINDER_MAX_INFLIGHT_REQUESTS: requests the service takes on at once
BURST = 10 * CAPACITY


async def _burst(url: str, body: bytes, n_clients: int, per_client: int, timeout: float):
    statuses, retry_after, errors = [], [], []
    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one():
            for _ in range(per_client):
                try:
                    r = await client.post(url, content=body, headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_after.append(r.headers.get("retry-after"))
                    assert r.json()["error"]["type"]

        await asyncio.gather(*(one() for _ in range(n_clients)))
    return statuses, retry_after, errors


def test_burst_beyond_capacity_gets_only_200_and_429(tmp_path, start_service):
    repo = tiny_repo.write_repo(tmp_path / "repo")
    svc = start_service(repo, max_inflight_requests=CAPACITY, queue_size=8, max_batch_size=4,
                        max_queue_delay_ms=20, request_timeout_s=20, log_level="warning")
    images = [base64.b64encode(png(noise(224, 224, seed=i))).decode() for i in range(4)]
    body = json.dumps({"images": images, "outputs": ["cls", "patch_tokens", "diagnostics"]}).encode()

    baseline = svc.rss_bytes()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], svc.rss_bytes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        statuses, retry_after, errors = asyncio.run(
            asyncio.wait_for(_burst(f"{svc.url}/features", body, BURST, 4, timeout=30), timeout=120))
    finally:
        stop.set()
        sampler.join(5)
    elapsed = time.monotonic() - t0

    print(f"\noverload: {BURST} clients x 4 requests in {elapsed:.1f} s: "
          f"200={statuses.count(200)} 429={statuses.count(429)} other={sorted(set(statuses) - {200, 429})} errors={errors}; "
          f"RSS {baseline / 2**20:.0f} -> peak {peak[0] / 2**20:.0f} MiB")
    assert not errors, f"requests failed without an answer: {errors}"
    assert set(statuses) <= {200, 429}, f"unexpected statuses {sorted(set(statuses))}"
    assert statuses.count(200) > 0 and statuses.count(429) > 0
    assert all(v is not None and int(v) >= 1 for v in retry_after), "every 429 carries Retry-After"
    # bounded: bodies of refused requests are not kept; the queue holds at most queue_size images
    assert peak[0] - baseline < 200 * 2**20, f"RSS grew by {(peak[0] - baseline) / 2**20:.0f} MiB during the burst"
    # and the service still serves normally afterwards
    r = httpx.post(f"{svc.url}/features", json={"images": images[:1], "outputs": ["cls"]}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 1
    assert httpx.get(f"{svc.url}/health/ready", timeout=5).status_code == 200
