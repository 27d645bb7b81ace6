"""Liveness, readiness and Prometheus metrics (open even when an API key is set)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from service.api.deps import get_service
from service.api.schemas import Liveness, Readiness
from service.core.metrics import CONTENT_TYPE_LATEST
from service.core.service import FeatureService

router = APIRouter(tags=["operations"])


@router.get(
    "/health/live",
    response_model=Liveness,
    summary="The process is up (stays true while loading and draining)",
    description="503 only if a batch worker stopped, which should never happen: restart the process then.",
    responses={503: {"model": Liveness, "description": "A batch worker stopped."}},
)
async def live(service: FeatureService = Depends(get_service)):
    status = service.health.liveness()
    body = Liveness(status="alive" if status.ok else "dead", reasons=status.reasons)
    return JSONResponse(body.model_dump(), status_code=200 if status.ok else 503)


@router.get(
    "/health/ready",
    response_model=Readiness,
    summary="Ready to serve",
    description=(
        "200 when every loadable model is loaded and warmed up and the service is not draining. A model whose files "
        "are broken is listed as failed and does not block readiness unless SINDER_REQUIRE_ALL_MODELS is set; with "
        "SINDER_REQUIRE_GPU, a model running on the CPU provider keeps readiness false. 503 otherwise, with the reasons."
    ),
    responses={503: {"model": Readiness, "description": "Not ready; `reasons` says why."}},
)
async def ready(service: FeatureService = Depends(get_service)):
    status = service.health.readiness()
    body = Readiness(ready=status.ok, reasons=status.reasons, models={e.key: e.state for e in service.registry.versions})
    return JSONResponse(body.model_dump(), status_code=200 if status.ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (prefix sinder_)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}},
)
async def metrics(service: FeatureService = Depends(get_service)) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
