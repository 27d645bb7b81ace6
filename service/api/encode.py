"""The wire formats of ``/features``: typed results from the core in, response bytes out.

JSON (the default): every array as ``{"dtype", "shape", "data"}`` with base64 of its
little-endian bytes, or as nested numbers (``encoding: json``). Binary, for clients that do not
speak KServe v2 (``Accept: application/vnd.sinder.features``): the same JSON document as a
header of ``Features-Header-Length`` bytes, every array as ``{"dtype", "shape", "offset",
"nbytes"}`` into the bytes that follow it: no base64 and no numbers.

Each array is converted only when the requested dtype needs it (an fp16 model asked for fp16
is never copied before it is written), base64 is SIMD (pybase64), JSON is orjson.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import orjson
import pybase64

from service.core import features as feat
from service.core.batcher import ItemResult

MAP_NAMES = {"norms": "token_norms", "alignment": "defect_alignment", "mask": "defect_mask"}
BINARY_MEDIA_TYPE = "application/vnd.sinder.features"
HEADER_LENGTH = "Features-Header-Length"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY  # nested numbers straight from arrays; NaN and infinities become null


@dataclass(frozen=True)
class Encoding:
    dtype: str = "float32"  # float32 | float16
    encoding: str = "base64"  # base64 | json
    diagnostics_maps: bool = False


class Blobs:
    """The binary section of a binary answer: arrays appended, each described by its offset."""

    def __init__(self):
        self.parts: list[memoryview] = []
        self.size = 0

    def add(self, array: np.ndarray) -> dict:
        view = memoryview(array).cast("B")
        entry = {"dtype": _name(array), "shape": list(array.shape), "offset": self.size, "nbytes": len(view)}
        self.parts.append(view)
        self.size += len(view)
        return entry


def _name(array: np.ndarray) -> str:
    return array.dtype.newbyteorder("=").name


def _typed(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` in ``dtype`` (bool stays bool), little-endian, C order; a copy only when one of those needs it."""
    array = np.asarray(array)
    if array.dtype != np.bool_:
        array = array.astype(np.dtype(dtype).newbyteorder("<"), copy=False)
    return np.ascontiguousarray(array)


def encode_array(array: np.ndarray, dtype: str, encoding: str, blobs: Blobs | None = None):
    """``{"dtype", "shape", "data"}`` (base64), nested numbers (an array orjson writes), or a binary reference."""
    array = _typed(array, dtype)
    if blobs is not None:
        return blobs.add(array)
    if encoding == "base64":
        # a ready JSON string (base64 needs no escaping): orjson copies it as it is, with no str in between
        text = orjson.Fragment(b"".join((b'"', pybase64.b64encode(memoryview(array).cast("B")), b'"')))
        return {"dtype": _name(array), "shape": list(array.shape), "data": text}
    return array


def diagnostics(outputs: dict[str, np.ndarray], enc: Encoding, blobs: Blobs | None = None) -> dict:
    summary = feat.defect_summary(outputs)
    out = {"defect_tokens": summary.defect_tokens, "defect_fraction": summary.defect_fraction,
           "max_median_norm_ratio": summary.max_median_norm_ratio}
    if enc.diagnostics_maps:
        for key, name in MAP_NAMES.items():
            out[key] = encode_array(outputs[name], enc.dtype, enc.encoding, blobs)
    return out


def image_result(index: int, item: ItemResult, outputs: tuple[str, ...], enc: Encoding, blobs: Blobs | None = None) -> dict:
    o = item.outputs
    tokens = o["patch_tokens"]
    entry: dict = {"index": index, "grid": [int(tokens.shape[0]), int(tokens.shape[1])]}
    arrays = {"cls": "cls_token", "patch_tokens": "patch_tokens", "registers": "register_tokens"}
    for name in outputs:
        if name in arrays:
            entry[name] = encode_array(o[arrays[name]], enc.dtype, enc.encoding, blobs)
        elif name == "pooled":
            entry["pooled"] = encode_array(feat.pooled(o), enc.dtype, enc.encoding, blobs)
        elif name == "diagnostics":
            entry["diagnostics"] = diagnostics(o, enc, blobs)
    entry["timing"] = {"queue_ms": round(item.queue_s * 1000, 3), "inference_ms": round(item.inference_s * 1000, 3),
                       "batch_size": item.batch_size}
    return entry


def _document(result: feat.FeaturesResult, enc: Encoding, blobs: Blobs | None) -> dict:
    results = [image_result(i, item, result.outputs, enc, blobs) for i, item in enumerate(result.items)]
    return {"model": result.model, "model_version": result.version, "results": results,
            "timing": {"decode_ms": round(result.decode_s * 1000, 3),
                       "total_ms": round((time.monotonic() - result.started) * 1000, 3)}}


def dumps(document) -> bytes:
    """JSON bytes of a document whose arrays came from ``encode_array``."""
    return orjson.dumps(document, option=_OPTIONS)


def features_body(result: feat.FeaturesResult, enc: Encoding) -> bytes:
    """The JSON body of a /features answer."""
    return dumps(_document(result, enc, None))


def features_binary(result: feat.FeaturesResult, enc: Encoding) -> tuple[bytes, int]:
    """(body, header length) of a binary /features answer: the JSON header, then every array's bytes."""
    blobs = Blobs()
    header = orjson.dumps(_document(result, enc, blobs))
    return b"".join([header, *blobs.parts]), len(header)


def wants_binary(accept: str | None) -> bool:
    """Whether ``Accept`` lists the binary media type, other than with ``q=0`` ("not acceptable")."""
    for item in (accept or "").lower().split(","):
        kind, *params = (p.strip() for p in item.split(";"))
        if kind == BINARY_MEDIA_TYPE and not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000")
                                                 for p in params):
            return True
    return False
