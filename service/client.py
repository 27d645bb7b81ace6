"""A small typed client for the feature service, for downstream Python services.

    from service.client import FeatureClient

    with FeatureClient("http://localhost:8000") as client:
        results = client.features(["cat.jpg", "dog.png"], outputs=("cls", "patch_tokens"))
        results[0].cls            # numpy float32 [C]
        results[0].patch_tokens   # numpy float32 [h, w, C]

Needs only httpx, numpy and pillow (no torch, nothing else of the service): copy this one
file into another project if that is simpler than installing the package.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

import httpx
import numpy as np

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]  # Any: a PIL image

_ARRAY_KEYS = {"dtype", "shape", "data"}


class ServiceError(Exception):
    """An error answer of the service, from its envelope ``{"error": {"type", "message", "index"}}``.

    ``status`` is the HTTP status; ``index`` names the image a 4xx is about (None when the
    request as a whole was refused); ``retry_after`` is the seconds a 429/503 asked to wait.
    """

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        index: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ):
        self.status = status
        self.type = type
        self.message = message
        self.index = index
        self.retry_after = retry_after
        self.body = body
        where = f" (image {index})" if index is not None else ""
        super().__init__(f"HTTP {status} {type}: {message}{where}")


class ClientInputError(ValueError):
    """An input the client cannot send (unreadable path, unsupported array shape or type)."""


@dataclass
class FeatureResult:
    """One image's features. Arrays are numpy; outputs that were not requested are None."""

    index: int
    grid: tuple[int, int]
    model: str | None
    model_version: str | int | None
    cls: np.ndarray | None = None
    pooled: np.ndarray | None = None
    patch_tokens: np.ndarray | None = None
    diagnostics: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None  # queue_ms, inference_ms of this image
    extra: dict[str, Any] = field(default_factory=dict)  # any other field of the result, decoded


@dataclass
class FeatureResponse:
    model: str | None
    model_version: str | int | None
    results: list[FeatureResult]
    timing: dict[str, Any] | None
    raw: dict[str, Any]


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
    """A service array as numpy: ``{"dtype", "shape", "data"}`` with base64 of little-endian bytes
    (or a list in ``data``), or plain nested JSON numbers (cast to ``float_dtype`` when given, since
    JSON does not say the precision). Dicts are decoded recursively; other values are returned as they are."""
    if isinstance(obj, Mapping):
        if _ARRAY_KEYS <= set(obj):
            dtype = np.dtype(obj["dtype"])
            shape = tuple(int(s) for s in obj["shape"])
            data = obj["data"]
            if isinstance(data, str):
                raw = base64.b64decode(data, validate=True)
                arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
                if arr.size != int(np.prod(shape, dtype=np.int64)):
                    raise ValueError(f"array of shape {list(shape)} has {arr.size} {dtype} values")
                return arr.astype(dtype, copy=False).reshape(shape)
            return np.asarray(data, dtype=dtype).reshape(shape)
        return {k: decode_array(v, float_dtype) for k, v in obj.items()}
    if isinstance(obj, list) and obj and all(isinstance(x, (list, int, float, bool)) or x is None for x in obj):
        arr = np.asarray(obj)
        if arr.dtype == object:  # JSON has no NaN: the service sends null for a non-finite value
            arr = np.asarray(_nulls_to_nan(obj), dtype=np.float64)
        if float_dtype and arr.dtype.kind == "f":
            arr = arr.astype(float_dtype)
        return arr
    return obj


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


def _error_from(resp: httpx.Response) -> ServiceError:
    retry = resp.headers.get("retry-after")
    try:
        retry_after = float(retry) if retry is not None else None
    except ValueError:
        retry_after = None
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        index = err.get("index")
        return ServiceError(resp.status_code, str(err.get("type", "error")), str(err.get("message", "")),
                            int(index) if isinstance(index, int) else None, retry_after, body)
    message = body.get("detail") if isinstance(body, dict) else body
    return ServiceError(resp.status_code, "http_error", str(message)[:500], None, retry_after, body)


def _form_value(key: str, value: Any) -> str | list[str]:
    """A multipart form field: lists as repeated fields, a resolution as "H,W", booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):  # {"name", "version"}
        return f"{value['name']}:{value['version']}" if value.get("version") else str(value["name"])
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if key == "resolution" else [str(v) for v in value]
    return str(value)


class FeatureClient:
    """Synchronous client. ``http_client`` lets tests pass e.g. FastAPI's TestClient."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        http_client: httpx.Client | None = None,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self._headers = headers
        self._timeout = timeout

    def __enter__(self) -> "FeatureClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        return self._http.request(method, path, headers=self._headers, **kw)

    def _json(self, method: str, path: str, ok: Iterable[int] = (200,), **kw) -> Any:
        resp = self._request(method, path, **kw)
        if resp.status_code not in tuple(ok):
            raise _error_from(resp)
        return resp.json()

    def features(
        self,
        images: ImageInput | Sequence[ImageInput],
        model: str | None = None,
        outputs: Sequence[str] = ("cls", "pooled"),
        dtype: str = "float32",
        encoding: str = "base64",
        multipart: bool = False,
        **options: Any,
    ) -> list[FeatureResult]:
        """Features of ``images`` (one image or a list), as numpy arrays, in request order.

        ``options`` are passed through to the request (e.g. ``resolution``, ``maps``). With
        ``multipart=True`` the images go as a multipart upload instead of base64 in JSON
        (a third fewer bytes on the wire). Raises :class:`ServiceError` on an error answer.
        """
        return self.features_response(images, model, outputs, dtype, encoding, multipart, **options).results

    def features_response(
        self,
        images: ImageInput | Sequence[ImageInput],
        model: str | None = None,
        outputs: Sequence[str] = ("cls", "pooled"),
        dtype: str = "float32",
        encoding: str = "base64",
        multipart: bool = False,
        **options: Any,
    ) -> FeatureResponse:
        """As :meth:`features`, with the response's model, version and timing."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or hasattr(images, "mode"):
            images = [images]
        blobs = [encode_image(im) for im in images]
        if not blobs:
            raise ClientInputError("no images given")
        opts: dict[str, Any] = {"outputs": list(outputs), "dtype": dtype, "encoding": encoding, **options}
        if model is not None:
            opts["model"] = model
        if multipart:
            files = [("images", (f"image{i}", b, "application/octet-stream")) for i, b in enumerate(blobs)]
            data = {k: _form_value(k, v) for k, v in opts.items() if v is not None}
            body = self._json("POST", "/features", files=files, data=data)
        else:
            payload = {"images": [base64.b64encode(b).decode("ascii") for b in blobs], **opts}
            body = self._json("POST", "/features", json=payload)
        return self._parse(body, dtype)

    @staticmethod
    def _parse(body: dict[str, Any], dtype: str | None = None) -> FeatureResponse:
        top_model, top_version = body.get("model"), body.get("model_version")
        results = []
        for i, item in enumerate(body.get("results", [])):
            item = dict(item)
            grid = item.pop("grid", None) or (0, 0)
            index = item.pop("index", i)
            model = item.pop("model", top_model)
            version = item.pop("model_version", top_version)
            known = {k: decode_array(item.pop(k), dtype) if k in item else None for k in ("cls", "pooled", "patch_tokens")}
            diag = item.pop("diagnostics", None)
            timing = item.pop("timing", None)
            results.append(FeatureResult(
                index=int(index), grid=(int(grid[0]), int(grid[1])), model=model, model_version=version,
                diagnostics=decode_array(diag, dtype) if diag is not None else None, timing=timing,
                extra={k: decode_array(v, dtype) for k, v in item.items()}, **known,
            ))
        return FeatureResponse(top_model, top_version, results, body.get("timing"), body)

    def health(self) -> HealthStatus:
        """Liveness and readiness (a 503 from /health/ready means not ready, not an error)."""
        live = self._request("GET", "/health/live")
        ready = self._request("GET", "/health/ready")
        detail: dict[str, Any] = {}
        try:
            detail = ready.json() if ready.content else {}
        except ValueError:
            pass
        if ready.status_code not in (200, 503):
            raise _error_from(ready)
        return HealthStatus(live.status_code == 200, ready.status_code == 200, detail if isinstance(detail, dict) else {})

    def models(self) -> Any:
        """GET /models: the served models with their manifest summary and execution provider."""
        return self._json("GET", "/models")

    def model(self, name: str) -> dict[str, Any]:
        """GET /models/{name}; a ServiceError with status 404 when it is unknown."""
        return self._json("GET", f"/models/{name}")
