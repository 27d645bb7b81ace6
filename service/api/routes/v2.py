"""KServe Open Inference Protocol v2 over REST, with Triton's binary tensor data extension.

Same batcher, limits, statuses, metrics and API key as ``POST /features``; errors come back
as the protocol's ``{"error": "..."}`` body. Health routes stay open, like ``/health/*``.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute

from service import __version__
from service.api.body import read_limited
from service.api.deps import get_service, request_deadline, require_api_key, wait_disconnect
from service.api.errors import CLIENT_CLOSED, error_status_headers, validation_message
from service.api.schemas_v2 import (V2_ERROR_RESPONSES, V2_INFER_BODY, V2ModelMetadata, V2ModelReady, V2ServerLive,
                                    V2ServerMetadata, V2ServerReady, V2Tensor)
from service.api.v2 import request as v2req
from service.api.v2 import response as v2resp
from service.core import features as feat
from service.core.deadlines import Deadline
from service.core.errors import ModelNotFound, ServiceError
from service.core.registry import ModelVersion
from service.core.service import FeatureService

EXTENSIONS = ["binary_tensor_data", "model_configuration"]  # the second: routes/v2_config.py
_OFF_LOOP_BYTES = 4 * 1024 * 1024  # answers larger than this are encoded in a thread


def protocol_error(exc: ServiceError) -> Response:
    status, headers = error_status_headers(exc)
    if status == CLIENT_CLOSED:
        return Response(status_code=499)
    return Response(v2resp.error_body(exc.message), status_code=status, headers=headers, media_type="application/json")


class V2Route(APIRoute):
    """Every error of a v2 route, including the API key's and FastAPI's own validation, as ``{"error": ...}``."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return protocol_error(exc)
            except RequestValidationError as exc:
                return Response(v2resp.error_body(validation_message(exc)[0]), status_code=422,
                                media_type="application/json")

        return route


health = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=V2Route)
router = APIRouter(prefix="/v2", tags=["kserve v2"], route_class=V2Route, dependencies=[Depends(require_api_key)])


def _version(version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit():
        raise ModelNotFound(f"model version must be a positive integer, not {version!r}")
    return int(version)


def _entry(service: FeatureService, name: str, version: str | None) -> ModelVersion:
    """The named version (loaded or not), or the highest ready one; 404 when unknown."""
    candidates = service.registry.versions_of(name)
    if not candidates:
        raise ModelNotFound(f"unknown model {name!r}; available: {', '.join(service.registry.names) or 'none'}")
    wanted = _version(version)
    if wanted is None:
        ready = [e for e in candidates if e.state == "ready"]
        return (ready or candidates)[-1]
    match = [e for e in candidates if e.version == wanted]
    if not match:
        raise ModelNotFound(f"model {name!r} has no version {wanted}; available: "
                            f"{', '.join(str(e.version) for e in candidates)}")
    return match[0]


@health.get("", response_model=V2ServerMetadata, summary="v2 server metadata", responses=V2_ERROR_RESPONSES)
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name="sinder", version=__version__, extensions=EXTENSIONS)


@health.get("/health/live", response_model=V2ServerLive, summary="v2 liveness (200 when live)",
            responses={503: {"model": V2ServerLive, "description": "A batch worker stopped."}})
async def server_live(service: FeatureService = Depends(get_service)) -> Response:
    ok = service.health.liveness().ok
    return Response(V2ServerLive(live=ok).model_dump_json(), status_code=200 if ok else 503, media_type="application/json")


@health.get("/health/ready", response_model=V2ServerReady, summary="v2 readiness (200 when ready, as /health/ready)",
            responses={503: {"model": V2ServerReady, "description": "Not ready (loading, draining, no model)."}})
async def server_ready(service: FeatureService = Depends(get_service)) -> Response:
    ok = service.health.readiness().ok
    return Response(V2ServerReady(ready=ok).model_dump_json(), status_code=200 if ok else 503, media_type="application/json")


def _metadata(service: FeatureService, name: str, version: str | None) -> V2ModelMetadata:
    entry = _entry(service, name, version)
    outputs = []
    if entry.backend is not None:
        for spec in entry.backend.outputs:
            shape = [-1 if not isinstance(d, int) else d for d in spec.shape]
            outputs.append(V2Tensor(name=spec.name, datatype=v2resp.datatype_of(spec.dtype), shape=shape))
        tokens = next((s for s in entry.backend.outputs if s.name == "patch_tokens"), None)
        if tokens is not None:
            width = tokens.shape[-1] if isinstance(tokens.shape[-1], int) else -1
            outputs.append(V2Tensor(name=v2resp.POOLED, datatype="FP32", shape=[-1, width]))
    return V2ModelMetadata(
        name=entry.name, versions=[str(e.version) for e in service.registry.versions_of(name)],
        platform="onnxruntime_onnx",
        inputs=[V2Tensor(name=v2req.INPUT_NAME, datatype="UINT8", shape=[-1, -1, -1, 3])], outputs=outputs)


@router.get("/models/{name}", response_model=V2ModelMetadata, summary="v2 model metadata", responses=V2_ERROR_RESPONSES)
async def model_metadata(name: str, service: FeatureService = Depends(get_service)) -> V2ModelMetadata:
    return _metadata(service, name, None)


@router.get("/models/{name}/versions/{version}", response_model=V2ModelMetadata, summary="v2 model version metadata",
            responses=V2_ERROR_RESPONSES)
async def model_version_metadata(name: str, version: str, service: FeatureService = Depends(get_service)) -> V2ModelMetadata:
    return _metadata(service, name, version)


def _ready(service: FeatureService, name: str, version: str | None) -> Response:
    entry = _entry(service, name, version)
    ok = entry.state == "ready" and not service.draining
    return Response(V2ModelReady(name=entry.name, ready=ok).model_dump_json(), status_code=200 if ok else 503,
                    media_type="application/json")


_READY_RESPONSES = {503: {"model": V2ModelReady, "description": "Known but not ready."}, **V2_ERROR_RESPONSES}


@router.get("/models/{name}/ready", response_model=V2ModelReady, summary="v2 model readiness", responses=_READY_RESPONSES)
async def model_ready(name: str, service: FeatureService = Depends(get_service)) -> Response:
    return _ready(service, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=V2ModelReady, summary="v2 model version readiness",
            responses=_READY_RESPONSES)
async def model_version_ready(name: str, version: str, service: FeatureService = Depends(get_service)) -> Response:
    return _ready(service, name, version)


_INFER_DOC = dict(
    response_class=Response, responses={200: {"description": "Inference response: JSON, or (with binary outputs) a JSON "
                                                             "header of Inference-Header-Content-Length bytes then the tensors.",
                                              "content": {"application/json": {}, "application/octet-stream": {}}},
                                        **V2_ERROR_RESPONSES},
    openapi_extra={"requestBody": V2_INFER_BODY},
    description=(
        "Input `images`: `UINT8 [B, H, W, 3]` RGB pixels at a size the model accepts (sides multiples of the patch "
        "size, within the manifest's bounds; no resizing), or `BYTES [B]` encoded files (JPEG, PNG, WebP, ...) "
        "decoded and resized exactly as `POST /features` does (binary elements are raw files; JSON elements are "
        "base64 text). Outputs: every graph output plus `pooled` (mean patch token); only those listed in `outputs` "
        "are computed into the answer (all when none is listed). Request parameter `output_datatype`: `FP32` "
        "(default) or `FP16` for float outputs; `timeout` (microseconds, as tritonclient sends it) shortens the "
        "request's deadline as `X-Request-Timeout` does. Binary data (Triton's extension) with `binary_data_size`, "
        "`binary_data` and `binary_data_output`."
    ),
)


async def _infer(request: Request, service: FeatureService, deadline: Deadline, name: str, version: str | None) -> Response:
    with service.admission.request() as ticket:
        entry = service.resolve(name, _version(version))
        body = await read_limited(request, service.settings.max_body_bytes, ticket.reserve)
        parsed = v2req.parse(body, request.headers.get(v2req.HEADER_LENGTH))
        if parsed.timeout_s is not None:
            deadline = deadline.within(parsed.timeout_s)
        wanted = v2resp.select(parsed, entry.output_names)
        images = v2req.images_input(parsed)
        # Pixels go to the batcher as they are (views into the body); files are decoded and resized as /features does.
        result = await service.features(list(images), entry, feat.FeatureOptions(one_size=True), deadline,
                                        lambda: wait_disconnect(request))
        per_image = [item.outputs for item in result.items]

        def build() -> tuple[bytes | memoryview, int | None]:
            return v2resp.encode(entry.name, entry.version, parsed.id, v2resp.outputs(per_image, wanted, parsed.output_datatype))

        size = sum(np.asarray(v).nbytes for v in per_image[0].values()) * len(per_image)
        content, header_length = await service.offload(build) if size > _OFF_LOOP_BYTES else build()
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(header_length)})


@router.post("/models/{name}/infer", summary="v2 inference", **_INFER_DOC)
async def infer(name: str, request: Request, service: FeatureService = Depends(get_service),
                deadline: Deadline = Depends(request_deadline)) -> Response:
    return await _infer(request, service, deadline, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="v2 inference on one version", **_INFER_DOC)
async def infer_version(name: str, version: str, request: Request, service: FeatureService = Depends(get_service),
                        deadline: Deadline = Depends(request_deadline)) -> Response:
    return await _infer(request, service, deadline, name, version)
