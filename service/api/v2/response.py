"""Writing a v2 inference response: the outputs asked for, JSON numbers or binary tensors.

Each requested output is gathered from the per-image results into one ``[B, ...]`` array of
the requested element type in a single pass (the cast happens in the copy); a binary output is
gathered straight into the body, after the JSON header, with no base64 and no numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from service.api.v2.request import OUTPUT_DATATYPES, InferRequest, RequestedOutput
from service.core import features as feat
from service.core.errors import InvalidInput

POOLED = "pooled"  # mean of the patch tokens over the grid, computed only when asked for
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "bool": "BOOL", "uint8": "UINT8",
             "int8": "INT8", "int32": "INT32", "int64": "INT64"}
_FLOAT_KINDS = "f"


def datatype_of(dtype) -> str:
    return DATATYPES.get(np.dtype(dtype).name, "BYTES")


def select(request: InferRequest, available: Sequence[str]) -> list[RequestedOutput]:
    """The outputs to compute, in the order asked (every output, in graph order, when none is listed)."""
    names = [*available, POOLED]
    if request.outputs is None:
        return [RequestedOutput(n, request.binary_output) for n in names]
    unknown = [o.name for o in request.outputs if o.name not in names]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {names}")
    seen, out = set(), []
    for o in request.outputs:
        if o.name not in seen:
            seen.add(o.name)
            out.append(RequestedOutput(o.name, request.binary_output if o.binary is None else o.binary))
    return out


@dataclass(frozen=True)
class Output:
    """One output of the answer: a part per image, gathered into ``[B, ...]`` of ``dtype`` only when written."""

    name: str
    parts: list[np.ndarray]
    dtype: np.dtype
    binary: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.parts), *self.parts[0].shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def outputs(per_image: Sequence[dict[str, np.ndarray]], wanted: Sequence[RequestedOutput], datatype: str) -> list[Output]:
    """The answer's outputs; float outputs in ``datatype`` (FP32 or FP16), others as the graph gives them."""
    out = []
    for o in wanted:
        parts = [feat.pooled(x) if o.name == POOLED else x[o.name] for x in per_image]
        dtype = np.dtype(OUTPUT_DATATYPES[datatype]) if parts[0].dtype.kind in _FLOAT_KINDS else parts[0].dtype
        out.append(Output(o.name, parts, dtype, o.binary))
    return out


def gather(output: Output, out: np.ndarray | None = None) -> np.ndarray:
    """``[B, ...]`` of every image's part, into ``out`` when given; the cast, if any, happens in this one copy."""
    if out is None:
        out = np.empty(output.shape, output.dtype)
    for i, part in enumerate(output.parts):
        out[i] = part
    return out


def encode(model_name: str, model_version: int, request_id: str | None,
           tensors: Sequence[Output]) -> tuple[bytes | memoryview, int | None]:
    """(body, JSON header length or None when every output is JSON) of the inference response. Binary
    outputs are gathered straight into the body's buffer, after the header: one copy of each, not two."""
    entries, binary = [], []
    for o in tensors:
        entry = {"name": o.name, "datatype": datatype_of(o.dtype), "shape": list(o.shape)}
        if o.binary:
            entry["parameters"] = {"binary_data_size": o.nbytes}
            binary.append(o)
        else:
            entry["data"] = gather(o).reshape(-1)
        entries.append(entry)
    doc = {"model_name": model_name, "model_version": str(model_version), "outputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    # orjson writes numpy arrays natively (NaN and infinities become null: JSON has neither).
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, None
    body = np.empty(len(header) + sum(o.nbytes for o in binary), np.uint8)
    body[:len(header)] = np.frombuffer(header, np.uint8)
    offset = len(header)
    for o in binary:
        gather(o, body[offset:offset + o.nbytes].view(o.dtype.newbyteorder("<")).reshape(o.shape))
        offset += o.nbytes
    return memoryview(body), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error object."""
    return orjson.dumps({"error": message})
