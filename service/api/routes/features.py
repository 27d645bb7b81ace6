"""POST /features: images in, features and defect diagnostics out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api import body, encode
from service.api.deps import get_service, request_deadline, require_api_key, wait_disconnect
from service.api.errors import error_responses
from service.api.schemas import FeaturesMultipart, FeaturesRequest, FeaturesResponse
from service.core.deadlines import Deadline
from service.core.service import FeatureService

router = APIRouter(tags=["features"], dependencies=[Depends(require_api_key)])

_FORM_FIELDS = set(FeaturesMultipart.model_fields) - {"images"}
_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/FeaturesRequest"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/FeaturesMultipart"}},
    },
}


@router.post(
    "/features",
    summary="Features and defect diagnostics for one or more images",
    description=(
        "Send images as JSON (`images`: base64 strings or data URIs) or multipart/form-data (repeat the `images` "
        "file field; options as form fields). Results come back in request order, each with its patch grid, the "
        "requested outputs and queue/inference timing; `model` and `model_version` say which model produced them. "
        "Images are batched with other requests' images of the same input size. A bad image fails the request "
        "with an error naming its `index`. With `Accept: application/vnd.sinder.features` the answer is binary: "
        "the same JSON document as a header of `Features-Header-Length` bytes, each array as `{dtype, shape, offset, "
        "nbytes}` into the little-endian bytes after it (no base64; `encoding` is ignored)."
    ),
    response_model=None,
    responses={200: {"model": FeaturesResponse, "description": "One result per image, in request order.",
                     "content": {"application/json": {}, "application/vnd.sinder.features": {
                         "schema": {"type": "string", "format": "binary"}}}},
               **error_responses(400, 401, 404, 413, 415, 422, 424, 429, 500, 503, 504)},
    openapi_extra={"requestBody": _BODY},
)
async def features(request: Request, service: FeatureService = Depends(get_service),
                   deadline: Deadline = Depends(request_deadline)) -> Response:
    with service.admission.request() as ticket:
        images, parsed = await body.parse(
            request, limit=service.settings.max_body_bytes, image_field="images", max_files=service.settings.max_images,
            json_model=FeaturesRequest, form_fields=_FORM_FIELDS, reserve=ticket.reserve,
        )
        entry = service.resolve(*parsed.model_ref())
        result = await service.features(images, entry, parsed.to_options(), deadline, lambda: wait_disconnect(request))
        if encode.wants_binary(request.headers.get("accept")):
            content, length = await service.offload(encode.features_binary, result, parsed.to_encoding())
            return Response(content, media_type=encode.BINARY_MEDIA_TYPE, headers={encode.HEADER_LENGTH: str(length)})
        content = await service.offload(encode.features_body, result, parsed.to_encoding())
    return Response(content, media_type="application/json")
