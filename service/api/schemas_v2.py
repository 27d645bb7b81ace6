"""Schemas of the KServe v2 routes (for openapi.yaml; the routes parse and write bodies themselves)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class V2Error(BaseModel):
    error: str = Field(description="What was wrong (the protocol's error object).")


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions: binary_tensor_data, model_configuration.")


class V2ServerLive(BaseModel):
    live: bool


class V2ServerReady(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2Tensor(BaseModel):
    name: str
    datatype: str = Field(description="UINT8, BYTES, FP32, FP16, BOOL, ...")
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor] = Field(description="`images`: UINT8 [B, H, W, 3]; BYTES [B] of encoded files is accepted too.")
    outputs: list[V2Tensor]


class V2RequestInput(BaseModel):
    name: str = Field(description="`images`.")
    shape: list[int]
    datatype: str = Field(description="`UINT8` (pixels [B, H, W, 3]) or `BYTES` (files [B]).")
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size`: bytes of this tensor after the JSON header.")
    data: list[Any] | None = Field(None, description="Row-major values (UINT8) or base64 strings (BYTES) when not binary.")


class V2RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="`binary_data`: return this output as binary data.")


class V2InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_output` (all outputs binary by default), `output_datatype` (`FP32` or `FP16`).")
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = Field(None, description="Outputs to compute; default: every output.")


V2_ERROR_RESPONSES = {
    code: {"model": V2Error, "description": text} for code, text in {
        400: "Malformed body: invalid JSON header, header length or binary sizes that do not match the body, corrupt gzip.",
        401: "Missing or wrong API key.",
        404: "Unknown model or version.",
        413: "Body, image count or an image's pixel count over the configured limit.",
        422: "Wrong input name, datatype or shape, unknown output, or an image that cannot be decoded.",
        424: "The backend failed and would fail again: the model failed to load, or the backend rejected the batch.",
        429: "Overloaded; retry after `Retry-After` seconds.",
        500: "A bug in the service.",
        503: "Not ready, draining, or the model failed to load.",
        504: "The request deadline passed before its images ran.",
    }.items()
}

V2_INFER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/V2InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                                "description": "JSON header (Inference-Header-Content-Length bytes) "
                                                               "followed by the binary input tensors."}},
    },
}
