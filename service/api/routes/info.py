"""GET /info: what a client needs to size its requests (as text-embeddings-inference's /info)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from service import __version__
from service.api.deps import get_service, require_api_key
from service.api.errors import error_responses
from service.core.registry import ModelVersion
from service.core.service import FeatureService

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


class ResolutionBounds(BaseModel):
    short_side: int = Field(description="Default short side of `keep_aspect` resizing.")
    multiple_of: int = Field(description="Input sides are rounded to a multiple of this (the patch size).")
    min_side: int
    max_side: int
    max_pixels: int = Field(description="Most pixels of the model input (height x width).")


class ModelInfo(BaseModel):
    id: str = Field(description="`name:version`, usable as `model` in any request.")
    name: str
    version: int
    state: str = Field(description="pending, loading, ready or failed.")
    default: bool = Field(description="Used when a request names no model.")
    dims: int | None = Field(description="Embedding size C (CLS, pooled and patch tokens).")
    patch_size: int | None
    register_tokens: int | None = Field(description="Register tokens the model returns (0 when none).")
    resolution: ResolutionBounds | None = Field(description="Input size bounds from the manifest.")
    max_batch_size: int | None = Field(description="Largest batch the service runs for this model.")
    provider: str | None = Field(description="Execution provider the loaded session really uses.")
    outputs: list[str] = Field(description="Graph outputs of the loaded model.")


class ServiceInfo(BaseModel):
    version: str = Field(description="Version of the service.")
    default_model: str | None
    models: list[ModelInfo]
    max_images: int = Field(description="Most images in one request (SINDER_MAX_IMAGES); split longer lists.")
    max_body_bytes: int = Field(description="Largest request body (SINDER_MAX_BODY_BYTES).")
    max_image_pixels: int = Field(description="Most pixels of one source image (SINDER_MAX_IMAGE_PIXELS).")
    max_batch_size: int = Field(description="Largest batch across requests (SINDER_MAX_BATCH_SIZE); per model see `models`.")
    request_timeout_s: float = Field(description="Deadline of a request (SINDER_REQUEST_TIMEOUT_S).")
    providers_requested: list[str] = Field(description="SINDER_PROVIDERS as resolved (`auto` = CUDA when available, then CPU).")
    providers_available: list[str] = Field(description="Execution providers this onnxruntime build offers.")


def _model_info(entry: ModelVersion, default: str | None, max_batch: int) -> ModelInfo:
    arch = entry.manifest.architecture if entry.manifest is not None else None  # None until loaded, or failed
    rule = entry.resize
    return ModelInfo(
        id=entry.key, name=entry.name, version=entry.version, state=entry.state, default=entry.name == default,
        dims=arch.embed_dim if arch else None, patch_size=arch.patch_size if arch else None,
        register_tokens=arch.num_register_tokens if arch else None,
        resolution=ResolutionBounds(short_side=rule.short_side, multiple_of=rule.multiple_of, min_side=rule.min_side,
                                    max_side=rule.max_side, max_pixels=rule.max_pixels) if rule else None,
        max_batch_size=entry.batcher.max_batch_size if entry.batcher else min(max_batch, entry.max_batch_size),
        provider=entry.provider, outputs=entry.output_names,
    )


def _available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:  # a test backend without onnxruntime installed
        return []
    return list(onnxruntime.get_available_providers())


@router.get("/info", response_model=ServiceInfo, summary="Service version, models, sizes and limits, in one call",
            description="What a client needs to size its requests: each model's dims, patch size and input bounds, "
                        "and the request limits. Needs the API key when one is set.",
            responses=error_responses(401))
async def info(service: FeatureService = Depends(get_service)) -> ServiceInfo:
    settings = service.settings
    default = service.registry.default_name()
    return ServiceInfo(
        version=__version__, default_model=default,
        models=[_model_info(e, default, settings.max_batch_size) for e in service.registry.versions],
        max_images=settings.max_images, max_body_bytes=settings.max_body_bytes, max_image_pixels=settings.max_image_pixels,
        max_batch_size=settings.max_batch_size, request_timeout_s=settings.request_timeout_s,
        providers_requested=list(settings.providers), providers_available=_available_providers(),
    )
