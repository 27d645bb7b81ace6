"""What a feature request asks for and what it gets back, as typed values (wire formats live in service/api/)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from contract.manifest import DIAGNOSTIC_OUTPUTS, MASK, NORMS, PATCH
from service.core.batcher import ItemResult
from service.core.errors import InvalidInput

DEFAULT_OUTPUTS = ("cls", "pooled", "patch_tokens", "diagnostics")
PICTURE_OUTPUTS = (PATCH, NORMS, MASK)


@dataclass(frozen=True)
class FeatureOptions:
    outputs: tuple[str, ...] | None = None  # None: DEFAULT_OUTPUTS the model has (see ``with_outputs_for``)
    resize: str = "keep_aspect"  # keep_aspect | native | stretch
    short_side: int | None = None
    resolution: tuple[int, int] | None = None
    one_size: bool = False  # every image must come to one input size (a v2 output is one [B, ...] tensor)


@dataclass(frozen=True)
class DefectSummary:
    defect_tokens: int
    defect_fraction: float
    max_median_norm_ratio: float | None  # None when the median norm is 0 or the ratio is not finite


@dataclass
class FeaturesResult:
    """One request's answer: results in request order, from ``model`` version ``version``."""

    model: str
    version: int
    outputs: tuple[str, ...]  # what was asked for, defaults filled in
    items: list[ItemResult]
    started: float  # time.monotonic() when the request was admitted
    decode_s: float


def _has(output: str, available: list[str]) -> bool:
    if output == "registers":
        return "register_tokens" in available
    if output == "diagnostics":
        return all(n in available for n in DIAGNOSTIC_OUTPUTS)
    return True


def with_outputs_for(options: FeatureOptions, available: list[str], model: str) -> FeatureOptions:
    """Fill in the default outputs this model can give; InvalidInput when it cannot give a requested one."""
    if options.outputs is None:
        return replace(options, outputs=tuple(o for o in DEFAULT_OUTPUTS if _has(o, available)))
    if "registers" in options.outputs and "register_tokens" not in available:
        raise InvalidInput(f"model {model} has no register tokens; drop 'registers' from outputs")
    if "diagnostics" in options.outputs:
        missing = [n for n in DIAGNOSTIC_OUTPUTS if n not in available]
        if missing:
            raise InvalidInput(f"model {model} has no diagnostic outputs {missing}; drop 'diagnostics' from outputs")
    return options


def pooled(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the patch tokens over the grid, in float32."""
    return outputs["patch_tokens"].astype(np.float32).mean(axis=(0, 1))


def defect_summary(outputs: dict[str, np.ndarray]) -> DefectSummary:
    norms = np.asarray(outputs["token_norms"], dtype=np.float32)
    mask = np.asarray(outputs["defect_mask"]).astype(bool)
    median = float(np.median(norms)) if norms.size else 0.0
    ratio = float(norms.max() / median) if median > 0 else None
    return DefectSummary(
        defect_tokens=int(mask.sum()),
        defect_fraction=float(mask.mean()) if mask.size else 0.0,
        max_median_norm_ratio=ratio if ratio is not None and np.isfinite(ratio) else None,
    )
