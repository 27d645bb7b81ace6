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

from service.core.errors import BadRequest, ClientGone, InvalidInput, PayloadTooLarge, UnsupportedMediaType

_LIST_FIELDS = {"outputs"}


async def read_limited(request: Request, limit: int, reserve: Callable[[int], None] | None = None) -> bytes:
    """The whole body, refused (413) past ``limit``; ``reserve(n)`` books bytes as they arrive (may raise 429)."""
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


async def parse(request: Request, *, limit: int, image_field: str, max_files: int,
                json_model: type[BaseModel], form_fields: set[str],
                reserve: Callable[[int], None] | None = None) -> tuple[list[bytes | str], BaseModel]:
    """Images (bytes, or base64 text) and validated options from a JSON or multipart body."""
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
        parsed = await run_in_threadpool(_parse_json, body, json_model) if len(body) > 256 * 1024 else _parse_json(body, json_model)
        images = getattr(parsed, image_field)
        return (images if isinstance(images, list) else [images]), parsed
    return await _parse_multipart(request, body, image_field, max_files, json_model, form_fields)


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


async def _parse_multipart(request, body, image_field, max_files, json_model, form_fields):
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
        for value in form.getlist(image_field):
            images.append(await value.read() if isinstance(value, UploadFile) else value)
        unknown = sorted(set(form.keys()) - form_fields - {image_field})
        if unknown:
            raise InvalidInput(f"unknown form fields {unknown}; known: {sorted(form_fields | {image_field})}")
        options = {key: _form_value(key, form.getlist(key)) for key in form.keys() if key != image_field}
    finally:
        await form.close()
    if not images:
        raise InvalidInput(f"multipart body has no {image_field!r} part")
    for key, value in options.items():
        if isinstance(value, UploadFile):
            raise InvalidInput(f"form field {key!r} must be text, not a file")
    stub = ["-"] * len(images) if image_field == "images" else "-"  # placeholders: the images stay bytes
    try:
        parsed = json_model.model_validate({**options, image_field: stub})
    except ValidationError as exc:
        raise validation_error(exc) from None
    return images, parsed
