"""A light loopback load client: prebuilt HTTP/1.1 requests over keep-alive sockets, no HTTP library.

The front-end benchmark counts the service's CPU time per image, so the client must cost little
next to it and must not parse what it receives: each connection sends the same request bytes,
reads the status line and headers, skips ``Content-Length`` bytes of body and goes again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .loadgen import ensure_loopback


@dataclass
class RawResult:
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    response_bytes: int = 0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


def build_request(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _connection(host: str, port: int, request: bytes, until: float, result: RawResult) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        while time.perf_counter() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            result.statuses[status] += 1
            result.response_bytes += length
    finally:
        writer.close()


async def run(url: str, body: bytes, *, connections: int, seconds: float, headers: dict[str, str] | None = None) -> RawResult:
    ensure_loopback(url)
    parts = urlsplit(url)
    request = build_request(url, body, headers)
    result = RawResult()
    start = time.perf_counter()
    tasks = [_connection(parts.hostname, parts.port, request, start + seconds, result) for _ in range(connections)]
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            result.errors[type(outcome).__name__] += 1
    result.seconds = time.perf_counter() - start
    return result


def run_sync(url: str, body: bytes, **kw) -> RawResult:
    return asyncio.run(run(url, body, **kw))


def _process_main(args: tuple) -> dict:
    url, body, kw = args
    res = run_sync(url, body, **kw)
    return {"statuses": dict(res.statuses), "errors": dict(res.errors), "seconds": res.seconds,
            "response_bytes": res.response_bytes}


def run_processes(url: str, body: bytes, *, processes: int, **kw) -> RawResult:
    """:func:`run` in ``processes`` client processes at once (one Python process cannot feed a GPU
    service); ``connections`` is per process, time is the longest any process ran."""
    if processes <= 1:
        return run_sync(url, body, **kw)
    import multiprocessing as mp

    ensure_loopback(url)
    with mp.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_process_main, [(url, body, kw)] * processes)
    total = RawResult()
    for p in parts:
        total.statuses.update({int(k): v for k, v in p["statuses"].items()})
        total.errors.update(p["errors"])
        total.response_bytes += p["response_bytes"]
        total.seconds = max(total.seconds, p["seconds"])
    return total
