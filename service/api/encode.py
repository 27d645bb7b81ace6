"""The JSON wire format of ``/features``: typed results from the core in, response bytes out."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import numpy as np

from service.core import features as feat
from service.core.batcher import ItemResult

MAP_NAMES = {"norms": "token_norms", "alignment": "defect_alignment", "mask": "defect_mask"}


@dataclass(frozen=True)
class Encoding:
    dtype: str = "float32"  # float32 | float16
    encoding: str = "base64"  # base64 | json
    diagnostics_maps: bool = False


def encode_array(array: np.ndarray, dtype: str, encoding: str):
    """``{"dtype", "shape", "data"}`` (little-endian base64) or nested JSON numbers."""
    array = np.asarray(array)
    if array.dtype != np.bool_:
        array = array.astype(dtype, copy=False)
    if encoding == "base64":
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return {"dtype": str(array.dtype), "shape": list(array.shape),
                "data": base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii")}
    if array.dtype != np.bool_ and not np.isfinite(array).all():
        # JSON has no NaN/Infinity: non-finite values become null.
        array = np.where(np.isfinite(array), array, None)
    return array.tolist()


def diagnostics(outputs: dict[str, np.ndarray], enc: Encoding) -> dict:
    summary = feat.defect_summary(outputs)
    out = {"defect_tokens": summary.defect_tokens, "defect_fraction": summary.defect_fraction,
           "max_median_norm_ratio": summary.max_median_norm_ratio}
    if enc.diagnostics_maps:
        for key, name in MAP_NAMES.items():
            out[key] = encode_array(outputs[name], enc.dtype, enc.encoding)
    return out


def image_result(index: int, item: ItemResult, outputs: tuple[str, ...], enc: Encoding) -> dict:
    o = item.outputs
    tokens = o["patch_tokens"]
    entry: dict = {"index": index, "grid": [int(tokens.shape[0]), int(tokens.shape[1])]}
    for name in outputs:
        if name == "cls":
            entry["cls"] = encode_array(o["cls_token"], enc.dtype, enc.encoding)
        elif name == "pooled":
            entry["pooled"] = encode_array(feat.pooled(o), enc.dtype, enc.encoding)
        elif name == "patch_tokens":
            entry["patch_tokens"] = encode_array(tokens, enc.dtype, enc.encoding)
        elif name == "registers":
            entry["registers"] = encode_array(o["register_tokens"], enc.dtype, enc.encoding)
        elif name == "diagnostics":
            entry["diagnostics"] = diagnostics(o, enc)
    entry["timing"] = {"queue_ms": round(item.queue_s * 1000, 3), "inference_ms": round(item.inference_s * 1000, 3),
                       "batch_size": item.batch_size}
    return entry


def features_body(result: feat.FeaturesResult, enc: Encoding) -> bytes:
    """The JSON body of a /features answer."""
    results = [image_result(i, item, result.outputs, enc) for i, item in enumerate(result.items)]
    body = {"model": result.model, "model_version": result.version, "results": results,
            "timing": {"decode_ms": round(result.decode_s * 1000, 3),
                       "total_ms": round((time.monotonic() - result.started) * 1000, 3)}}
    return json.dumps(body, separators=(",", ":")).encode()
