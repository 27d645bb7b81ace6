"""SIGTERM during load: every accepted request gets its full result, new ones get 503 until the
listener closes (then connection refused), and the process exits within its grace period.

What a client sees, in order: 200 for work accepted before SIGTERM (even if still queued);
503 `unavailable` with Retry-After for requests arriving in the first ``drain_delay_s``
(readiness is false then, so balancers stop sending); after that the port is closed and a new
connection is refused. The one exception: a connection that sits in the kernel's accept queue
at the instant the listener closes is reset without an answer; the application never read it,
so no work is lost, and a client may retry it like a refused connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time

import httpx
import pytest
import tiny_repo
from stress_helpers import noise, png

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`

DRAIN_DELAY = 1.5
GRACE = 10.0


async def _client_loop(url: str, body: bytes, n_images: int, stop_at: float, log: list):
    # one connection per request (Connection: close): a request refused at connect was never
    # accepted; anything else that fails without an answer would be a lost request
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        while time.monotonic() < stop_at:
            t = time.monotonic()
            try:
                r = await client.post(url, content=body, headers={"content-type": "application/json", "connection": "close"})
            except httpx.ConnectError:
                log.append((t, time.monotonic(), "refused", None))
                await asyncio.sleep(0.05)
                continue
            except httpx.HTTPError as exc:
                log.append((t, time.monotonic(), type(exc).__name__, None))
                continue
            results = None
            if r.status_code == 200:
                data = r.json()["results"]
                results = sum(1 for x in data if "cls" in x and "patch_tokens" in x)
            log.append((t, time.monotonic(), r.status_code, results))


def test_sigterm_during_load_loses_no_accepted_request(tmp_path, start_service):
    repo = tiny_repo.write_repo(tmp_path / "repo")
    # a long batching delay keeps accepted work queued when SIGTERM arrives
    svc = start_service(repo, max_batch_size=16, max_queue_delay_ms=250, drain_delay_s=DRAIN_DELAY,
                        drain_grace_s=GRACE, max_inflight_requests=256, queue_size=1024, log_level="info")
    n_images = 3
    body = json.dumps({"images": [base64.b64encode(png(noise(84, 84, seed=i))).decode() for i in range(n_images)],
                       "outputs": ["cls", "patch_tokens"]}).encode()
    log: list = []
    ready_during_drain: list[int] = []

    async def scenario():
        stop_at = time.monotonic() + 1.5 + DRAIN_DELAY + 3
        clients = [asyncio.create_task(_client_loop(f"{svc.url}/features", body, n_images, stop_at, log)) for _ in range(8)]
        await asyncio.sleep(1.5)
        t_term = time.monotonic()
        svc.terminate()
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(timeout=5) as c:
            try:
                ready_during_drain.append((await c.get(f"{svc.url}/health/ready")).status_code)
                ready_during_drain.append((await c.get(f"{svc.url}/health/live")).status_code)
            except httpx.ConnectError:
                pass
        await asyncio.gather(*clients)
        return t_term

    t_term = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    try:
        code = svc.proc.wait(timeout=DRAIN_DELAY + GRACE + 10)
    except Exception:
        raise AssertionError(f"service did not exit within the grace period:\n{svc.log_tail()}") from None
    exit_after = time.monotonic() - t_term

    kinds = {}
    for _, _, status, _ in log:
        kinds[status] = kinds.get(status, 0) + 1
    in_flight = sum(1 for t, done, s, _ in log if t < t_term < done)
    print(f"\ndrain: {kinds}; {in_flight} requests in flight at SIGTERM; readiness/liveness during drain "
          f"{ready_during_drain}; exit code {code} after {exit_after:.1f} s")
    # uvicorn re-raises the captured SIGTERM once its graceful shutdown is complete, so a clean
    # drain ends as "killed by SIGTERM" (-15 here, 143 in a shell/container) or 0; never SIGKILL
    assert code in (0, -signal.SIGTERM), svc.log_tail()
    assert "Finished server process" in svc.log() or code == 0
    assert exit_after <= DRAIN_DELAY + GRACE + 5
    # sent well before SIGTERM: accepted, so each must come back complete (a request sent just
    # before it may reach the server after it and get a 503, an answer, not a loss)
    before = [(s, r) for t, _, s, r in log if t < t_term - 0.3]
    assert before and all(s == 200 and r == n_images for s, r in before), \
        f"a request accepted before SIGTERM did not get its full result: {[x for x in before if x[0] != 200]}"
    finished_after = [r for t, done, s, r in log if t < t_term and done > t_term and s == 200]
    assert finished_after, "no request was still in flight at SIGTERM: the test did not exercise the drain"
    # After SIGTERM: 503 while draining, then refused. A connection still in the kernel's accept
    # queue when the listener closes is reset before the application reads it: that request was
    # never accepted (it would have had a 503) and only happens at the moment the port closes.
    resets = sorted(round(t - t_term, 2) for t, _, s, _ in log if s not in (200, 503, "refused"))
    print(f"answerless requests (reset at listener close), sent at t - SIGTERM = {resets}")
    assert all(DRAIN_DELAY - 0.25 <= t <= DRAIN_DELAY + 1.0 for t in resets), \
        f"requests failed without an answer outside the listener close: {resets}\n{svc.log_tail()}"
    assert set(kinds) - {200, 503, "refused"} <= {"ReadError", "RemoteProtocolError"}, kinds
    ok = [r for _, _, s, r in log if s == 200]
    assert ok and all(r == n_images for r in ok), "an accepted request came back incomplete"
    assert kinds.get(503, 0) > 0, "new requests during the drain delay should get 503"
    if ready_during_drain:
        assert ready_during_drain[0] == 503 and ready_during_drain[1] == 200
    assert "draining" in svc.log()
