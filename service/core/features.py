"""From one image's raw model outputs to the response entry: outputs, diagnostics, encodings."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace

import numpy as np

from service.core.errors import InvalidInput

OUTPUT_CHOICES = ("cls", "pooled", "patch_tokens", "diagnostics", "registers")
DEFAULT_OUTPUTS = ("cls", "pooled", "patch_tokens", "diagnostics")
DIAGNOSTIC_OUTPUTS = ("token_norms", "defect_alignment", "defect_mask")
MAP_NAMES = {"norms": "token_norms", "alignment": "defect_alignment", "mask": "defect_mask"}


@dataclass(frozen=True)
class FeatureOptions:
    outputs: tuple[str, ...] | None = None  # None: DEFAULT_OUTPUTS the model has (see ``with_outputs_for``)
    dtype: str = "float32"  # float32 | float16
    encoding: str = "base64"  # base64 | json
    diagnostics_maps: bool = False
    resize: str = "keep_aspect"  # keep_aspect | native | stretch
    short_side: int | None = None
    resolution: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)


def _has(output: str, available: list[str]) -> bool:
    if output == "registers":
        return "register_tokens" in available
    if output == "diagnostics":
        return all(n in available for n in DIAGNOSTIC_OUTPUTS)
    return True


def with_outputs_for(options: FeatureOptions, available: list[str], model: str) -> FeatureOptions:
    """Fill in the default outputs this model can give; 422 when it cannot give a requested one."""
    if options.outputs is None:
        return replace(options, outputs=tuple(o for o in DEFAULT_OUTPUTS if _has(o, available)))
    check_outputs(options, available, model)
    return options


def check_outputs(options: FeatureOptions, available: list[str], model: str) -> None:
    """422 when the model cannot give a requested output."""
    if "registers" in options.outputs and "register_tokens" not in available:
        raise InvalidInput(f"model {model} has no register tokens; drop 'registers' from outputs")
    if "diagnostics" in options.outputs:
        missing = [n for n in DIAGNOSTIC_OUTPUTS if n not in available]
        if missing:
            raise InvalidInput(f"model {model} has no diagnostic outputs {missing}; drop 'diagnostics' from outputs")


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


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def diagnostics(outputs: dict[str, np.ndarray], with_maps: bool, dtype: str, encoding: str) -> dict:
    norms = np.asarray(outputs["token_norms"], dtype=np.float32)
    mask = np.asarray(outputs["defect_mask"]).astype(bool)
    median = float(np.median(norms)) if norms.size else 0.0
    out = {
        "defect_tokens": int(mask.sum()),
        "defect_fraction": float(mask.mean()) if mask.size else 0.0,
        "max_median_norm_ratio": _finite(norms.max() / median) if median > 0 else None,
    }
    if with_maps:
        for key, name in MAP_NAMES.items():
            out[key] = encode_array(outputs[name], dtype, encoding)
    return out


def image_result(index: int, outputs: dict[str, np.ndarray], options: FeatureOptions, queue_s: float, inference_s: float,
                 batch_size: int = 1) -> dict:
    tokens = outputs["patch_tokens"]
    entry: dict = {"index": index, "grid": [int(tokens.shape[0]), int(tokens.shape[1])]}
    for name in options.outputs:
        if name == "cls":
            entry["cls"] = encode_array(outputs["cls_token"], options.dtype, options.encoding)
        elif name == "pooled":
            pooled = tokens.astype(np.float32).mean(axis=(0, 1))
            entry["pooled"] = encode_array(pooled, options.dtype, options.encoding)
        elif name == "patch_tokens":
            entry["patch_tokens"] = encode_array(tokens, options.dtype, options.encoding)
        elif name == "registers":
            entry["registers"] = encode_array(outputs["register_tokens"], options.dtype, options.encoding)
        elif name == "diagnostics":
            entry["diagnostics"] = diagnostics(outputs, options.diagnostics_maps, options.dtype, options.encoding)
    entry["timing"] = {"queue_ms": round(queue_s * 1000, 3), "inference_ms": round(inference_s * 1000, 3), "batch_size": batch_size}
    return entry
