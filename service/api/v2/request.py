"""Parsing a v2 inference request: JSON header, binary tensor section, the ``images`` input.

The body is trusted for nothing. Every size it declares (``Inference-Header-Content-Length``,
``binary_data_size``, the 4-byte length of each BYTES element, the shape) is checked against
the bytes actually received before anything is sliced, and nothing is allocated from a
declared size: pixel tensors are views into the body, BYTES elements are slices of it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from service.core.errors import BadRequest, InvalidInput

HEADER_LENGTH = "inference-header-content-length"
INPUT_NAME = "images"
# Output element types a client may ask for with the request parameter ``output_datatype``.
OUTPUT_DATATYPES = {"FP32": np.float32, "FP16": np.float16}
_MAX_DIMS = 8


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    binary: memoryview | None  # the tensor's bytes in the body (binary extension), else None
    data: object = None  # the JSON ``data`` field when not binary


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None  # None: every output (also for an empty list, as Triton does)
    binary_output: bool  # ``binary_data_output``: the default for outputs not listed with ``binary_data``
    output_datatype: str = "FP32"
    parameters: dict = field(default_factory=dict)
    timeout_s: float | None = None  # Triton's ``timeout`` parameter (microseconds), in seconds


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """(JSON header, binary section) of the body, from the ``Inference-Header-Content-Length`` header."""
    view = memoryview(body)
    if header_length is None:
        return view, view[:0]
    text = header_length.strip()
    if not text.isdigit():
        raise BadRequest(f"Inference-Header-Content-Length must be a non-negative integer, not {header_length!r}")
    length = int(text)
    if length == 0 or length > len(body):
        raise BadRequest(f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes")
    return view[:length], view[length:]


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    return value


def _parameters(item: dict, where: str) -> dict:
    # null is "none given": clients built on pydantic models (MLServer's types, for one) write unset fields as null
    value = item.get("parameters")
    return {} if value is None else _object(value, f"{where}.parameters")


def _shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_DIMS:
        raise InvalidInput(f"{where}.shape must be a list of at most {_MAX_DIMS} integers")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise InvalidInput(f"{where}.shape must hold non-negative integers, not {value}")
    return tuple(value)


def _binary_size(params: dict, where: str) -> int | None:
    size = params.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"{where}.parameters.binary_data_size must be a non-negative integer, not {size!r}")
    return size


def _flag(params: dict, key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput(f"{where}.parameters.{key} must be true or false, not {value!r}")
    return value


# Triton extensions a client may ask for that this server does not offer: refused by name, since ignoring
# them would answer something else than asked (a float tensor for top-k labels, the body for a memory region).
_UNSUPPORTED = {"shared_memory_region": "shared memory", "classification": "the classification extension"}


def _refuse_unsupported(params: dict, where: str) -> None:
    for key, what in _UNSUPPORTED.items():
        if params.get(key) not in (None, 0):
            raise InvalidInput(f"{where}.parameters.{key}: {what} is not supported by this server; "
                               "send and receive tensors in the body")


def parse(body: bytes, header_length: str | None) -> InferRequest:
    """The request, with each binary input's bytes located in the body; 400/422 naming what is wrong."""
    header, binary = split_body(body, header_length)
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"inference request header is not valid JSON: {exc}") from None
    doc = _object(doc, "inference request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string")
    params = _parameters(doc, "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inputs must be a non-empty list")
    inputs, offset = [], 0
    for i, item in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        item = _object(item, where)
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidInput(f"{where} needs a string name and datatype")
        shape = _shape(item.get("shape"), where)
        input_params = _parameters(item, where)
        _refuse_unsupported(input_params, where)
        size = _binary_size(input_params, where)
        if size is None:
            if "data" not in item:
                raise InvalidInput(f"input {name!r} has neither data nor parameters.binary_data_size")
            inputs.append(Tensor(name, datatype, shape, None, item["data"]))
            continue
        if offset + size > len(binary):
            raise BadRequest(f"input {name!r} declares binary_data_size {size} but only {len(binary) - offset} "
                             f"bytes of binary data are left in the body")
        inputs.append(Tensor(name, datatype, shape, binary[offset:offset + size]))
        offset += size
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary)} bytes after the JSON header but the inputs' binary_data_size "
                         f"add up to {offset}")
    return InferRequest(request_id, inputs, _outputs(doc), bool(_flag(params, "binary_data_output", "request")),
                        _output_datatype(params), params, _timeout_s(params))


def _timeout_s(params: dict) -> float | None:
    """``parameters.timeout`` as tritonclient sends it (``infer(..., timeout=...)``): microseconds."""
    value = params.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"parameters.timeout must be a positive integer of microseconds, not {value!r}")
    return value / 1e6


def _outputs(doc: dict) -> list[RequestedOutput] | None:
    raw = doc.get("outputs")
    if raw is None or raw == []:  # as Triton does: no output requested means every output
        return None
    if not isinstance(raw, list):
        raise InvalidInput("outputs must be a list")
    out = []
    for i, item in enumerate(raw):
        item = _object(item, f"outputs[{i}]")
        if not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{i}] needs a string name")
        output_params = _parameters(item, f"outputs[{i}]")
        _refuse_unsupported(output_params, f"outputs[{i}]")
        binary = _flag(output_params, "binary_data", f"outputs[{i}]")
        out.append(RequestedOutput(item["name"], binary))
    return out


def _output_datatype(params: dict) -> str:
    value = params.get("output_datatype", "FP32")
    if value not in OUTPUT_DATATYPES:
        raise InvalidInput(f"parameters.output_datatype must be one of {sorted(OUTPUT_DATATYPES)}, not {value!r}")
    return value


def images_input(request: InferRequest) -> np.ndarray | list[bytes | str]:
    """The ``images`` input: UINT8 pixels ``[B, H, W, 3]`` (a view into the body) or BYTES ``[B]`` files.

    The caller checks the count against its limit (``len`` of the result)."""
    names = [t.name for t in request.inputs]
    if names != [INPUT_NAME]:
        raise InvalidInput(f"the model takes one input named {INPUT_NAME!r}; got {names}")
    tensor = request.inputs[0]
    if tensor.datatype == "UINT8":
        return _pixels(tensor)
    if tensor.datatype == "BYTES":
        return _files(tensor)
    raise InvalidInput(f"input {INPUT_NAME!r} must be UINT8 [B, H, W, 3] pixels or BYTES [B] image files, "
                       f"not {tensor.datatype}")


def _pixels(tensor: Tensor) -> np.ndarray:
    shape = tensor.shape
    if len(shape) != 4 or shape[3] != 3 or not all(shape[1:]):
        raise InvalidInput(f"UINT8 input {INPUT_NAME!r} must have shape [B, H, W, 3] with no zero side, not {list(shape)}")
    expected = math.prod(shape)
    if tensor.binary is not None:
        if len(tensor.binary) != expected:
            raise BadRequest(f"input {INPUT_NAME!r} of shape {list(shape)} needs {expected} bytes; "
                             f"binary_data_size is {len(tensor.binary)}")
        return np.frombuffer(tensor.binary, dtype=np.uint8).reshape(shape)
    data = tensor.data
    if not isinstance(data, list) or not _fits(data, expected):
        raise InvalidInput(f"input {INPUT_NAME!r}: data must be a list of {expected} integers for shape {list(shape)}")
    try:
        values = np.asarray(data)  # no dtype: a cast would truncate 1.7 to 1 without a word
    except (ValueError, TypeError, OverflowError):
        values = None
    if values is None or values.dtype.kind not in "iu":
        raise InvalidInput(f"input {INPUT_NAME!r}: data must be integers in [0, 255], row-major")
    if values.size != expected:
        raise InvalidInput(f"input {INPUT_NAME!r}: data has {values.size} values; shape {list(shape)} needs {expected}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise InvalidInput(f"input {INPUT_NAME!r}: UINT8 values must be in [0, 255]")
    return values.astype(np.uint8).reshape(shape)


def _fits(data: list, expected: int) -> bool:
    """Cheap bound before numpy sees the list: a flat list of the right length, or nested lists."""
    return len(data) == expected or (bool(data) and isinstance(data[0], list) and len(data) <= expected)


def _files(tensor: Tensor) -> list[bytes | str]:
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"BYTES input {INPUT_NAME!r} must have shape [B] (or [B, 1]), not {list(shape)}")
    count = shape[0]
    if tensor.binary is None:
        data = tensor.data
        if not isinstance(data, list) or len(data) != count or not all(isinstance(d, str) for d in data):
            raise InvalidInput(f"input {INPUT_NAME!r}: JSON data must be a list of {count} base64 strings "
                               "(send raw files with the binary extension)")
        return list(data)
    return split_bytes(tensor.binary, count)


def split_bytes(buffer: memoryview, count: int) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length then that many bytes, exactly filling ``buffer``."""
    out, offset, end = [], 0, len(buffer)
    for i in range(count):
        if offset + 4 > end:
            raise BadRequest(f"BYTES input {INPUT_NAME!r}: element {i} of {count} starts past the end of its binary data")
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > end:
            raise BadRequest(f"BYTES input {INPUT_NAME!r}: element {i} declares {length} bytes but only "
                             f"{end - offset} are left")
        out.append(bytes(buffer[offset:offset + length]))
        offset += length
    if offset != end:
        raise BadRequest(f"BYTES input {INPUT_NAME!r}: {end - offset} bytes left over after {count} elements")
    return out
