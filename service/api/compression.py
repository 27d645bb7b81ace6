"""Request bodies sent with ``Content-Encoding: gzip`` or ``deflate``, inflated within the body limit.

Triton's clients compress inference requests this way (``request_compression_algorithm``),
and Triton inflates them before reading ``Inference-Header-Content-Length``, which counts
the inflated bytes; ``curl --compressed``-style uploads do the same. The inflated size is
bounded as it is produced (``max_length``), so a small body that inflates to gigabytes
costs no more memory than the limit: a zip bomb is refused with 413, never allocated.
"""

from __future__ import annotations

import zlib

from service.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

SUPPORTED = ("gzip", "deflate")  # and "identity", which changes nothing
_ALIASES = {"x-gzip": "gzip"}
_AUTO_HEADER = zlib.MAX_WBITS | 32  # zlib or gzip, told apart by their headers
_RAW_DEFLATE = -zlib.MAX_WBITS  # "deflate" without the zlib wrapper, which some clients send
_CHUNK = 1 << 20


def codings(header: str | None) -> list[str]:
    """The codings of a ``Content-Encoding`` header in the order they were applied; 415 for an unknown one."""
    out = []
    for part in (header or "").split(","):
        name = _ALIASES.get(part.strip().lower(), part.strip().lower())
        if name in ("", "identity"):
            continue
        if name not in SUPPORTED:
            raise UnsupportedMediaType(f"Content-Encoding {part.strip()!r} is not supported; send the body "
                                       f"uncompressed or as {' or '.join(SUPPORTED)}")
        out.append(name)
    return out


def inflate(body: bytes, applied: list[str], limit: int) -> bytes:
    """``body`` with the ``applied`` codings undone, last first; 413 past ``limit`` bytes, 400 when corrupt."""
    for name in reversed(applied):
        try:
            body = _inflate(body, _AUTO_HEADER, limit)
        except zlib.error as exc:
            if name != "deflate":
                raise BadRequest(f"request body is not valid {name} data ({exc})") from None
            try:
                body = _inflate(body, _RAW_DEFLATE, limit)
            except zlib.error as exc:
                raise BadRequest(f"request body is not valid deflate data ({exc})") from None
    return body


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    """Every member of ``data`` (gzip allows several, one after another), never more than ``limit + 1`` bytes."""
    parts, size = [], 0
    while data:
        stream, pending = zlib.decompressobj(wbits), data
        while not stream.eof:
            chunk = stream.decompress(pending, min(_CHUNK, limit + 1 - size))
            pending = stream.unconsumed_tail
            if not chunk and not pending and not stream.eof:
                raise zlib.error("the compressed data ends early")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body inflates to more than the limit of {limit} bytes")
            parts.append(chunk)
        data = stream.unused_data
    return b"".join(parts)
