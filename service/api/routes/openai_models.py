"""GET /v1/models and /v1/models/{model}: the OpenAI models API, for clients of /v1/embeddings.

OpenAI-compatible tools list the models before they use one (``client.models.list()`` in the
``openai`` package; LangChain, LiteLLM and chat front ends do it to fill a picker or to check
a server). Each loaded version is listed by the id /v1/embeddings answers with, ``name:version``;
``/v1/models/{model}`` also takes a bare name (its highest ready version).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from service.api.deps import get_service, require_api_key
from service.api.errors import error_responses
from service.api.schemas import parse_model_ref
from service.core.errors import ModelNotFound
from service.core.registry import ModelVersion
from service.core.service import FeatureService

router = APIRouter(tags=["embeddings"], dependencies=[Depends(require_api_key)])

OWNER = "sinder"


class OpenAIModel(BaseModel):
    id: str = Field(description="`name:version`, usable as `model` in /v1/embeddings.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the model was exported (its manifest's provenance); 0 when unknown.")
    owned_by: str = OWNER


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel] = Field(description="Every loaded model version.")


def _created(entry: ModelVersion) -> int:
    stamp = entry.manifest.provenance.exported_at if entry.manifest is not None else None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()) if stamp else 0
    except ValueError:  # a hand-written manifest with another time format
        return 0


def _model(entry: ModelVersion) -> OpenAIModel:
    return OpenAIModel(id=entry.key, created=_created(entry))


@router.get("/v1/models", response_model=OpenAIModelList, summary="Loaded models, OpenAI-style",
            responses=error_responses(401))
async def list_models(service: FeatureService = Depends(get_service)) -> OpenAIModelList:
    return OpenAIModelList(data=[_model(e) for e in service.registry.ready_versions()])


@router.get("/v1/models/{model}", response_model=OpenAIModel, summary="One model, OpenAI-style",
            description="`model` is `name:version` or a bare `name` (its highest ready version).",
            responses=error_responses(401, 404))
async def retrieve_model(model: str, service: FeatureService = Depends(get_service)) -> OpenAIModel:
    entry = service.resolve(*parse_model_ref(model))
    if entry.state != "ready":
        raise ModelNotFound(f"model {entry.key} is {entry.state}, not loaded")
    return _model(entry)
