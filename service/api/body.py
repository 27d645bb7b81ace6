"""Reading a request body within the size limit, as JSON or multipart, into images + options."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from service.api import compression
from service.core.errors import BadRequest, ClientGone, InvalidInput, PayloadTooLarge, UnsupportedMediaType

_LIST_FIELDS = {"outputs"}
_OFF_LOOP_BYTES = 256 * 1024  # parsing more JSON than this runs in a thread, off the event loop


async def read_limited(request: Request, limit: int, reserve: Callable[[int], None] | None = None) -> bytes:
    """The whole body, refused (413) past ``limit``; ``reserve(n)`` books bytes as they arrive (may raise 429).

    A body sent with ``Content-Encoding: gzip`` or ``deflate`` comes back inflated, within the same
    limit, its inflated bytes booked too (service/api/compression.py); another coding is a 415.
    """
    applied = compression.codings(request.headers.get("content-encoding"))
    body = await _read_raw(request, limit, reserve)
    if not applied:
        return body
    # In a thread: a few kB may inflate to the whole limit, tens of milliseconds of CPU.
    inflated = await run_in_threadpool(compression.inflate, body, applied, limit)
    if reserve is not None:
        reserve(len(inflated))
    return inflated


async def _read_raw(request: Request, limit: int, reserve: Callable[[int], None] | None) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit} bytes")
    if reserve is not None and declared and declared.isdigit():
        reserve(int(declared))  # refuse before reading when the budget cannot take it
        reserve = None
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            if reserve is not None:
                reserve(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("client disconnected while sending the body") from None
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def validation_error(exc: ValidationError) -> InvalidInput:
    parts, index = [], None
    for err in exc.errors()[:3]:
        loc = list(err.get("loc", ()))
        if index is None and len(loc) >= 2 and loc[0] in ("images", "image") and isinstance(loc[1], int):
            index = loc[1]
        where = ".".join(str(p) for p in loc) or "body"
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return InvalidInput("; ".join(parts), index=index)


def _form_value(key: str, values: list):
    if key == "resolution":
        text = str(values[-1]).strip().strip("[]()")
        parts = [p for p in re.split(r"[,x×\s]+", text) if p]
        return parts
    if key in _LIST_FIELDS:
        out = []
        for v in values:
            out += [p.strip() for p in str(v).split(",") if p.strip()]
        return out
    return values[-1]


async def parse(request: Request, *, limit: int, image_field: str | tuple[str, ...], max_files: int,
                json_model: type[BaseModel], form_fields: set[str],
                reserve: Callable[[int], None] | None = None) -> tuple[list[bytes | str], BaseModel]:
    """Images (bytes, or base64 text) and validated options from a JSON or multipart body.

    ``image_field`` may name several accepted fields (``("image", "images")``); the schema says
    whether more than one may be sent at once.
    """
    names = (image_field,) if isinstance(image_field, str) else tuple(image_field)
    kind = media_type(request)
    is_json = kind == "application/json" or kind.endswith("+json")
    if not is_json and kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {kind or '(none)'!r} is not supported; send application/json or multipart/form-data"
        )
    body = await read_limited(request, limit, reserve)
    if not body.strip():
        raise BadRequest("request body is empty")
    if is_json:
        # Parsing megabytes of JSON takes a while: keep the event loop free for other requests.
        parsed = await run_in_threadpool(_parse_json, body, json_model) if len(body) > _OFF_LOOP_BYTES else _parse_json(body, json_model)
        images = next((v for v in (getattr(parsed, n) for n in names) if v is not None), [])
        return (images if isinstance(images, list) else [images]), parsed
    return await _parse_multipart(request, body, names, max_files, json_model, form_fields)


def _parse_json(body: bytes, json_model: type[BaseModel]) -> BaseModel:
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest("body is not acceptable JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    try:
        return json_model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def _parse_multipart(request, body, names, max_files, json_model, form_fields):
    async def stream():
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_files + 1, max_fields=200, max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "files" in str(exc).lower():
            raise PayloadTooLarge(f"too many files in the multipart body (limit {max_files})") from None
        raise BadRequest(f"invalid multipart body: {exc}") from None
    try:
        images: list[bytes | str] = []
        sent: dict[str, int] = {}
        for name in names:
            for value in form.getlist(name):
                images.append(await value.read() if isinstance(value, UploadFile) else value)
                sent[name] = sent.get(name, 0) + 1
        unknown = sorted(set(form.keys()) - form_fields - set(names))
        if unknown:
            raise InvalidInput(f"unknown form fields {unknown}; known: {sorted(form_fields | set(names))}")
        options = {key: _form_value(key, form.getlist(key)) for key in form.keys() if key not in names}
    finally:
        await form.close()
    if not images:
        raise InvalidInput(f"multipart body has no {' or '.join(repr(n) for n in names)} part")
    for key, value in options.items():
        if isinstance(value, UploadFile):
            raise InvalidInput(f"form field {key!r} must be text, not a file")
    stubs = {}  # placeholders: the images stay bytes
    for name, count in sent.items():
        if name != "images" and count > 1:
            raise InvalidInput(f"send one {name!r} part, got {count}")
        stubs[name] = ["-"] * count if name == "images" else "-"
    try:
        parsed = json_model.model_validate({**options, **stubs})
    except ValidationError as exc:
        raise validation_error(exc) from None
    return images, parsed
