"""Writing a v2 inference response: the outputs asked for, JSON numbers or binary tensors.

Each requested output is gathered from the per-image results into one ``[B, ...]`` array of
the requested element type in a single pass (the cast happens in the copy); binary outputs
then go into the body as they are, after the JSON header, with no base64 and no numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def gather(per_image: Sequence[dict[str, np.ndarray]], name: str, datatype: str) -> np.ndarray:
    """One output for every image as ``[B, ...]``; float outputs in ``datatype`` (FP32 or FP16)."""
    parts = [feat.pooled(o) if name == POOLED else o[name] for o in per_image]
    first = parts[0]
    dtype = OUTPUT_DATATYPES[datatype] if first.dtype.kind in _FLOAT_KINDS else first.dtype
    out = np.empty((len(parts), *first.shape), dtype=dtype)
    for i, part in enumerate(parts):
        out[i] = part  # the cast, if any, happens in this copy
    return out


def encode(model_name: str, model_version: int, request_id: str | None,
           tensors: Sequence[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when every output is JSON) of the inference response."""
    outputs, blobs = [], []
    for name, array, binary in tensors:
        entry = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(memoryview(blob).cast("B"))
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        outputs.append(entry)
    doc = {"model_name": model_name, "model_version": str(model_version), "outputs": outputs}
    if request_id is not None:
        doc["id"] = request_id
    # orjson writes numpy arrays natively (NaN and infinities become null: JSON has neither).
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error object."""
    return orjson.dumps({"error": message})
