"""POST /v1/embeddings: image embeddings in the OpenAI embeddings format, as image-embedding servers serve them.

Compatible with the official ``openai`` client (``client.embeddings.create(model=..., input=[data URI, ...])``)
and with infinity's image modality (``modality: "image"``). Images only: the service never fetches
URLs, so an ``http(s)://`` input is refused with an error naming its index.
"""

from __future__ import annotations

import base64
import re
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.api import body
from service.api.deps import get_service, request_deadline, require_api_key, wait_disconnect
from service.api.errors import error_responses
from service.api.schemas import parse_model_ref
from service.core import features as feat
from service.core.deadlines import Deadline
from service.core.errors import BadRequest, InvalidImage, InvalidInput, UnsupportedMediaType
from service.core.registry import ModelVersion
from service.core.service import FeatureService

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)])

_URL = re.compile(r"^\s*[a-z][a-z0-9+.-]*://", re.IGNORECASE)
Pooling = Literal["cls", "mean"]


class EmbeddingsRequest(BaseModel):
    """The OpenAI embeddings request, for images; `modality`, `pooling` and `normalize` are extensions."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(
        description="One image or a list of images, each a `data:image/...;base64,` URI or a base64 string; at most "
                    "SINDER_MAX_IMAGES (413 beyond). URLs are refused (422): the service never fetches them.",
        json_schema_extra={"examples": [["data:image/png;base64,iVBORw0KGgo..."]]},
    )
    model: str | None = Field(None, description="`name` or `name:version` (see /info); default: the service's default model.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float`: a list of numbers; `base64`: the float32 little-endian bytes, base64 (what the "
                             "openai client asks for by default and decodes itself).")
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's embedding size when given (no truncation).")
    user: str | None = Field(None, description="Accepted for compatibility; unused.")
    modality: Literal["image"] = Field("image", description="infinity's modality switch; only `image` is served.")
    pooling: Pooling = Field(
        "cls", description="`cls`: the CLS token (DINOv2's image-level embedding, default); `mean`: the mean of the "
                           "patch tokens, i.e. `pooled` of /features (a summary of the dense features).")
    normalize: bool = Field(True, description="Scale each embedding to unit L2 length, as OpenAI's are.")

    @field_validator("encoding_format", mode="before")
    @classmethod
    def _null_is_default(cls, value):
        return "float" if value is None else value  # the API's default; some clients write unset options as null

    @field_validator("input", mode="before")
    @classmethod
    def _images_only(cls, value):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            if isinstance(value, list) and not value:
                raise ValueError("input holds no image")
            return value
        raise ValueError("input must be images as data URIs or base64 strings (one, or a list); "
                         "token arrays and other values are not accepted")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the image in `input`.")
    embedding: list[float] | str = Field(description="Floats, or base64 of float32 little-endian bytes (`encoding_format`).")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Patch tokens the model ran on, summed over the images.")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding] = Field(description="One entry per input image, in input order.")
    model: str = Field(description="`name:version` of the model that produced the embeddings.")
    usage: Usage


def _check_inputs(images: list[str]) -> None:
    for i, item in enumerate(images):
        if _URL.match(item) and not item.lstrip().lower().startswith("data:"):
            raise InvalidInput(f"input {i}: image URLs are not fetched by this service; send the image itself as a "
                               "data URI (data:image/jpeg;base64,...) or a base64 string", index=i)


def _images_only(exc: BadRequest | InvalidImage, images: list[str]) -> BadRequest | InvalidImage:
    """The error of an input that is no image, saying what this route takes: OpenAI clients send text here."""
    i = exc.index
    if i is None or not 0 <= i < len(images) or images[i].lstrip()[:5].lower() == "data:":
        return exc
    return type(exc)(f"{exc.message}; /v1/embeddings embeds images only (a data:image/...;base64 URI or the base64 "
                     "of an image file), not text", index=i)


def _check_dimensions(requested: int | None, dims: int, model: str) -> None:
    if requested is not None and requested != dims:
        raise InvalidInput(f"dimensions {requested} is not available: model {model} gives {dims}-dimensional "
                           f"embeddings and does not truncate them; omit dimensions or send {dims}")


def _encode(vector: np.ndarray, encoding_format: str):
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    if not np.isfinite(vector).all():  # JSON has no NaN/Infinity: null, as /features writes them
        return np.where(np.isfinite(vector), vector, None).tolist()
    return vector.tolist()


def _vector_size(entry: ModelVersion) -> int | None:
    return entry.manifest.architecture.embed_dim if entry.manifest is not None else None


def _vector(outputs: dict[str, np.ndarray], pooling: str) -> np.ndarray:
    """``cls``: the CLS token; ``mean``: the patch tokens' mean, the ``pooled`` output of /features."""
    if pooling == "cls":
        return np.asarray(outputs["cls_token"], dtype=np.float32).reshape(-1)
    return feat.pooled(outputs)


def _normalized(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else vector


@router.post(
    "/v1/embeddings",
    summary="Image embeddings, OpenAI-compatible",
    description=(
        "The OpenAI embeddings API for images, as image-embedding servers (infinity) serve it: `input` is a list "
        "of `data:image/...;base64,` URIs or base64 strings, `model` a model id from /info, `encoding_format` "
        "`float` or `base64`. The embedding is the CLS token (`pooling: cls`, default) or the mean of the patch "
        "tokens (`pooling: mean`), L2-normalized unless `normalize` is false. The official `openai` client works "
        "unchanged with `base_url=http://host:port/v1`; pass `pooling` and `normalize` through `extra_body`. "
        "Images share batches with /features; limits and errors are those of /features."
    ),
    response_model=EmbeddingsResponse,
    responses=error_responses(400, 401, 404, 413, 415, 422, 424, 429, 500, 503, 504),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsRequest"}}}}},
)
async def embeddings(request: Request, service: FeatureService = Depends(get_service),
                     deadline: Deadline = Depends(request_deadline)) -> JSONResponse:
    kind = body.media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"content type {kind or '(none)'!r} is not supported; send application/json")
    with service.admission.request() as ticket:
        images, parsed = await body.parse(
            request, limit=service.settings.max_body_bytes, image_field="input", max_files=service.settings.max_images,
            json_model=EmbeddingsRequest, form_fields=set(), reserve=ticket.reserve,
        )
        _check_inputs(images)
        entry = service.resolve(*parse_model_ref(parsed.model))
        dims = _vector_size(entry)
        if dims is not None:
            _check_dimensions(parsed.dimensions, dims, entry.key)
        options = feat.FeatureOptions(outputs=("cls" if parsed.pooling == "cls" else "pooled",))
        try:
            result = await service.features(images, entry, options, deadline, lambda: wait_disconnect(request))
        except (BadRequest, InvalidImage) as exc:
            raise _images_only(exc, images) from None
    data, tokens = [], 0
    for i, item in enumerate(result.items):
        vector = _vector(item.outputs, parsed.pooling)
        _check_dimensions(parsed.dimensions, vector.size, entry.key)
        vector = _normalized(vector) if parsed.normalize else vector
        data.append({"object": "embedding", "index": i, "embedding": _encode(vector, parsed.encoding_format)})
        tokens += int(np.prod(item.outputs["patch_tokens"].shape[:2]))
    return JSONResponse({"object": "list", "data": data, "model": entry.key,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
