"""A bounded, self-stopping load generator for the service, loopback only.

``concurrency`` workers each send one request at a time; all stop when ``max_requests`` have
been sent or ``max_seconds`` have passed, whichever comes first. Requests are prebuilt bytes so
that the generator spends its CPU on the wire, not on encoding.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


def ensure_loopback(url: str) -> None:
    """Refuse any target that is not this machine: the generator is for local benchmarks."""
    host = urlsplit(url).hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    bad = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if bad:
        raise ValueError(f"load generator targets loopback only; {host!r} resolves to {', '.join(sorted(bad))}")


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # exception type → count (timeouts, refused, ...)
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    response_bytes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    images_ok: int = 0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def images_per_s(self) -> float:
        return self.images_ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"sent": self.sent, "statuses": dict(self.statuses), "errors": dict(self.errors),
                "seconds": self.seconds, "images_ok": self.images_ok, "images_per_s": self.images_per_s}


async def run_load(
    url: str,
    body: bytes,
    *,
    images_per_request: int = 1,
    concurrency: int = 1,
    max_requests: int = 100,
    max_seconds: float = 30.0,
    request_timeout: float = 60.0,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> LoadResult:
    """POST ``body`` to ``url`` from ``concurrency`` workers; bounded by requests and time."""
    ensure_loopback(url)
    if concurrency < 1 or max_requests < 1 or max_seconds <= 0:
        raise ValueError("concurrency, max_requests and max_seconds must be positive")
    result = LoadResult()
    hdrs = {"content-type": content_type, **(headers or {})}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start = time.perf_counter()
    deadline = start + max_seconds

    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:

        async def worker() -> None:
            while result.sent < max_requests and time.perf_counter() < deadline:
                result.sent += 1
                t0 = time.perf_counter()
                try:
                    # the deadline stops new requests; one in flight waits at most request_timeout
                    resp = await asyncio.wait_for(client.post(url, content=body, headers=hdrs), timeout=request_timeout)
                except (httpx.HTTPError, asyncio.TimeoutError, OSError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                dt = time.perf_counter() - t0
                result.statuses[resp.status_code] += 1
                if resp.status_code == 200:
                    result.latencies.append(dt)
                    result.response_bytes.append(len(resp.content))
                    result.images_ok += images_per_request

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def run_load_sync(url: str, body: bytes, **kw) -> LoadResult:
    return asyncio.run(run_load(url, body, **kw))


def _process_worker(args: tuple) -> dict:
    url, body, kw = args
    res = run_load_sync(url, body, **kw)
    out = res.as_dict()
    out["latencies"] = res.latencies
    return out


def run_load_processes(url: str, body: bytes, *, processes: int, **kw) -> LoadResult:
    """:func:`run_load` in ``processes`` worker processes at once (one Python process cannot feed a
    GPU service); ``concurrency`` and ``max_requests`` are per process. Images/s is over the wall
    time of the slowest process."""
    import multiprocessing as mp

    ensure_loopback(url)
    if processes <= 1:
        return run_load_sync(url, body, **kw)
    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    with ctx.Pool(processes) as pool:
        parts = pool.map(_process_worker, [(url, body, kw)] * processes)
    total = LoadResult()
    for p in parts:
        total.sent += p["sent"]
        total.statuses.update({int(k): v for k, v in p["statuses"].items()})
        total.errors.update(p["errors"])
        total.images_ok += p["images_ok"]
        total.latencies.extend(p["latencies"])
    # process start-up is not load: use the longest time a generator actually ran
    total.seconds = max(p["seconds"] for p in parts) or (time.perf_counter() - start)
    return total
