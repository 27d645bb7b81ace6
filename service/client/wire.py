"""What goes over the wire: images out, arrays and typed results in. No HTTP here."""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np

from service.client.errors import ClientInputError, ServiceError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]  # Any: a PIL image

_ARRAY_KEYS = {"dtype", "shape", "data"}
_ARRAY_OUTPUTS = ("cls", "pooled", "patch_tokens", "registers")


@dataclass
class FeatureResult:
    """One image's features. Arrays are writable numpy arrays; outputs not requested are None."""

    index: int  # position in the list given to the client
    grid: tuple[int, int]  # patch grid [h, w]
    model: str | None
    model_version: str | int | None
    cls: np.ndarray | None = None  # [C]
    pooled: np.ndarray | None = None  # [C], mean of the patch tokens
    patch_tokens: np.ndarray | None = None  # [h, w, C]
    registers: np.ndarray | None = None  # [R, C], models with registers
    diagnostics: dict[str, Any] | None = None  # defect_tokens, defect_fraction, ...; maps as arrays
    timing: dict[str, Any] | None = None  # queue_ms, inference_ms of this image
    extra: dict[str, Any] = field(default_factory=dict)  # any other field of the result, decoded


@dataclass
class FeatureResponse:
    """The results of every request one call sent (several when the list was chunked)."""

    model: str | None
    model_version: str | int | None
    results: list[FeatureResult]
    raw: list[dict[str, Any]]  # each response body, in the order of the chunks


@dataclass
class HealthStatus:
    live: bool
    ready: bool
    detail: dict[str, Any]


def _nulls_to_nan(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_nulls_to_nan(v) for v in obj]
    return np.nan if obj is None else obj


def decode_array(obj: Any, float_dtype: str | None = None) -> Any:
    """A service array as a writable numpy array: ``{"dtype", "shape", "data"}`` with base64 of
    little-endian bytes (or a list in ``data``), or plain nested JSON numbers (cast to
    ``float_dtype`` when given, since JSON does not say the precision). Dicts are decoded
    recursively; other values are returned as they are."""
    if isinstance(obj, Mapping):
        if _ARRAY_KEYS <= set(obj):
            dtype = np.dtype(obj["dtype"])
            shape = tuple(int(s) for s in obj["shape"])
            data = obj["data"]
            if isinstance(data, str):
                # a bytearray, not bytes: frombuffer over it is writable without another copy
                raw = bytearray(base64.b64decode(data, validate=True))
                arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
                if arr.size != int(np.prod(shape, dtype=np.int64)):
                    raise ValueError(f"array of shape {list(shape)} has {arr.size} {dtype} values")
                return arr.astype(dtype, copy=False).reshape(shape)
            return np.array(data, dtype=dtype).reshape(shape)
        return {k: decode_array(v, float_dtype) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(x, (list, int, float, bool)) or x is None for x in obj):
        arr = np.array(obj)
        if arr.dtype == object:  # JSON has no NaN: the service sends null for a non-finite value
            arr = np.array(_nulls_to_nan(obj), dtype=np.float64)
        if float_dtype and arr.dtype.kind == "f":
            arr = arr.astype(float_dtype)
        return arr
    return obj


def is_single_image(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or hasattr(images, "mode")


def encode_image(image: ImageInput) -> bytes:
    """The bytes to send for one image: files and bytes as they are, arrays and PIL images as PNG."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            with open(image, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ClientInputError(f"cannot read image {os.fspath(image)!r}: {exc.strerror or exc}") from None
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
            raise ClientInputError(
                f"numpy images must be uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got {image.dtype} {list(image.shape)}"
            )
        from PIL import Image

        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image, without importing PIL for others
        buf = io.BytesIO()
        image.save(buf, format="PNG")  # lossless: the service sees exactly these pixels
        return buf.getvalue()
    raise ClientInputError(f"unsupported image type {type(image).__name__}: pass a path, bytes, a PIL image or a uint8 array")


def encode_images(images: ImageInput | Sequence[ImageInput]) -> list[bytes]:
    blobs = [encode_image(im) for im in ([images] if is_single_image(images) else images)]
    if not blobs:
        raise ClientInputError("no images given")
    return blobs


def error_from(status: int, headers: Mapping[str, str], body: Any) -> ServiceError:
    """A ServiceError from an error answer (the service's envelope, or any other body)."""
    retry = headers.get("retry-after")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None  # an HTTP date: the retry policy's own backoff applies
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        index = err.get("index")
        return ServiceError(status, str(err.get("type", "error")), str(err.get("message", "")),
                            int(index) if isinstance(index, int) else None, retry_after, body)
    message = body.get("detail") if isinstance(body, dict) else body
    return ServiceError(status, "http_error", str(message)[:500], None, retry_after, body)


def form_value(key: str, value: Any) -> str | list[str]:
    """A multipart form field: lists as repeated fields, a resolution as "H,W", booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):  # {"name", "version"}
        return f"{value['name']}:{value['version']}" if value.get("version") else str(value["name"])
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if key == "resolution" else [str(v) for v in value]
    return str(value)


def features_request(blobs: list[bytes], opts: dict[str, Any], multipart: bool) -> dict[str, Any]:
    """httpx keyword arguments of one POST /features."""
    if multipart:
        files = [("images", (f"image{i}", b, "application/octet-stream")) for i, b in enumerate(blobs)]
        return {"files": files, "data": {k: form_value(k, v) for k, v in opts.items() if v is not None}}
    return {"json": {"images": [base64.b64encode(b).decode("ascii") for b in blobs], **opts}}


def parse_results(body: dict[str, Any], offset: int = 0, dtype: str | None = None) -> list[FeatureResult]:
    """The typed results of one response body; ``offset`` is the chunk's first image in the caller's list."""
    top_model, top_version = body.get("model"), body.get("model_version")
    results = []
    for i, item in enumerate(body.get("results", [])):
        item = dict(item)
        grid = item.pop("grid", None) or (0, 0)
        index = item.pop("index", i)
        model = item.pop("model", top_model)
        version = item.pop("model_version", top_version)
        arrays = {k: item.pop(k, None) for k in _ARRAY_OUTPUTS}
        arrays = {k: None if v is None else decode_array(v, dtype) for k, v in arrays.items()}
        diag = item.pop("diagnostics", None)
        timing = item.pop("timing", None)
        results.append(FeatureResult(
            index=int(index) + offset, grid=(int(grid[0]), int(grid[1])), model=model, model_version=version,
            diagnostics=decode_array(diag, dtype) if diag is not None else None, timing=timing,
            extra={k: decode_array(v, dtype) for k, v in item.items()}, **arrays,
        ))
    return results


def merge(bodies: list[dict[str, Any]], offsets: list[int], dtype: str | None) -> FeatureResponse:
    results = [r for body, off in zip(bodies, offsets) for r in parse_results(body, off, dtype)]
    first = bodies[0] if bodies else {}
    return FeatureResponse(first.get("model"), first.get("model_version"), results, bodies)
