"""POST /visualize: a PNG of one image's token norms, defect tokens and PCA colours, one row per model variant."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service.api import body
from service.api.deps import get_service, request_deadline, require_api_key, wait_disconnect
from service.api.errors import error_responses
from service.api.schemas import VisualizeMultipart, VisualizeRequest
from service.core.deadlines import Deadline
from service.core.errors import InvalidInput
from service.core.service import FeatureService

router = APIRouter(tags=["pictures"], dependencies=[Depends(require_api_key)])

_IMAGE_FIELDS = ("image", "images")  # /visualize's own name, and /features' name for the same thing
_FORM_FIELDS = set(VisualizeMultipart.model_fields) - set(_IMAGE_FIELDS)
_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/VisualizeRequest"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/VisualizeMultipart"}},
    },
}


@router.post(
    "/visualize",
    summary="A picture of an image's defect tokens, for people",
    description=(
        "Send one image as JSON (`image`: a base64 string or data URI, or `images`: a list of one, the field name of "
        "/features) or multipart/form-data (one file part named `image` or `images`; options as form fields). "
        "`model`, `resize`, `short_side` and `resolution` mean what they mean for /features. Returns a PNG with one "
        "row per model: the image at the model's input size, the heat map of last-block token norms (each row on "
        "its own colour scale, with its colour bar) with defective tokens outlined in cyan on it and on the image, "
        "and the first three principal components of the patch tokens as RGB; a legend below says how to read them "
        "(and that PCA colours of synthetic weights carry no meaning). Every loaded model of the family (linked by "
        "the manifests' `variant` field) gets a row: the original first, then its SINDER repair, its test-time "
        "registers and any other variant (`compare: false` draws one row). Only a success is `image/png`: "
        "every error is the JSON envelope of /features, with the same statuses."
    ),
    response_class=Response,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                     "description": "PNG image."},
               **error_responses(400, 401, 404, 413, 415, 422, 424, 429, 500, 503, 504)},
    openapi_extra={"requestBody": _BODY},
)
async def visualize(request: Request, service: FeatureService = Depends(get_service),
                    deadline: Deadline = Depends(request_deadline)) -> Response:
    with service.admission.request() as ticket:
        images, parsed = await body.parse(
            request, limit=service.settings.max_body_bytes, image_field=_IMAGE_FIELDS, max_files=1,
            json_model=VisualizeRequest, form_fields=_FORM_FIELDS, reserve=ticket.reserve,
        )
        if len(images) != 1:
            raise InvalidInput(f"send exactly one image, got {len(images)}")
        entry = service.resolve(*parsed.model_ref())
        png = await service.visualize(images[0], entry, parsed.to_options(), parsed.compare, deadline,
                                      lambda: wait_disconnect(request))
    return Response(png, media_type="image/png")
