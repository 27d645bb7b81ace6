"""``manifest.json``: everything a server needs that the ONNX file does not say (model_repo/README.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import torch

from .. import __version__
from ..model import IMAGENET_MEAN, IMAGENET_STD, LoadedModel

FORMAT_VERSION = 1
REPAIR_SUMMARY_KEYS = ("before", "after", "fidelity", "iterations", "seconds", "stopped_by_rule",
                       "clean_fraction", "output")
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "int8": "float32"}


@dataclass(frozen=True)
class Resolution:
    """The default resize policy and the bounds of the image sides the graph is exported for."""

    short_side: int = 224
    min_side: int = 56
    max_side: int = 1036
    max_pixels: int = 1036 * 1036

    def validate(self, patch_size: int) -> None:
        for field in ("short_side", "min_side", "max_side"):
            value = getattr(self, field)
            if value <= 0 or value % patch_size:
                raise ValueError(f"{field} must be a positive multiple of the patch size {patch_size}, not {value}")
        if not self.min_side <= self.short_side <= self.max_side:
            raise ValueError(f"need min_side <= short_side <= max_side, got {self.min_side}, {self.short_side}, "
                             f"{self.max_side}")
        if self.max_pixels < self.min_side * self.min_side:
            raise ValueError(f"max_pixels {self.max_pixels} is below min_side^2")

    def to_dict(self, patch_size: int) -> dict:
        return {"policy": "keep_aspect", "short_side": self.short_side, "multiple_of": patch_size,
                "min_side": self.min_side, "max_side": self.max_side, "max_pixels": self.max_pixels}


def tensor_specs(embed_dim: int, num_register_tokens: int, precision: str) -> tuple[list[dict], list[dict]]:
    """The graph's inputs and outputs: name, dtype, shape (-1 for batch and image-dependent dims), meaning."""
    feat = DTYPE_NAMES[precision]
    outputs = [
        {"name": "cls_token", "dtype": feat, "shape": [-1, embed_dim],
         "meaning": "CLS token after the final LayerNorm (x_norm_clstoken)"},
        {"name": "patch_tokens", "dtype": feat, "shape": [-1, -1, -1, embed_dim],
         "meaning": "patch tokens after the final LayerNorm (x_norm_patchtokens), [B, H/p, W/p, C]"},
    ]
    if num_register_tokens:
        outputs.append({"name": "register_tokens", "dtype": feat, "shape": [-1, num_register_tokens, embed_dim],
                        "meaning": "register tokens after the final LayerNorm (x_norm_regtokens)"})
    outputs += [
        {"name": "token_norms", "dtype": "float32", "shape": [-1, -1, -1],
         "meaning": "L2 norm of each patch token of the last block, before the final norm"},
        {"name": "defect_alignment", "dtype": "float32", "shape": [-1, -1, -1],
         "meaning": "|cosine| between that token and the singular defect direction (defect.direction)"},
        {"name": "defect_mask", "dtype": "bool", "shape": [-1, -1, -1],
         "meaning": "defect_alignment > mean + threshold_std * std of the image's alignments"},
    ]
    inputs = [{"name": "images", "dtype": "uint8", "shape": [-1, -1, -1, 3],
               "meaning": "RGB pixels [B, H, W, 3]; H and W multiples of the patch size within the bounds"}]
    return inputs, outputs


def repair_summary_of(report: dict | None) -> dict | None:
    """The manifest's ``repair`` block from a ``repair_report.json`` (or an already short summary)."""
    if report is None:
        return None
    picked = {k: report[k] for k in REPAIR_SUMMARY_KEYS if k in report}
    return picked or dict(report)


def build_manifest(
    *,
    loaded: LoadedModel,
    name: str,
    version: int,
    precision: str,
    max_batch_size: int,
    resolution: Resolution,
    direction: torch.Tensor,
    direction_layer: int,
    threshold_std: float,
    high_norm_factor: float,
    parity: dict,
    repair: dict | None,
    opset: int,
    external_data: bool,
    extra: dict | None = None,
    opset_imports: dict[str, int] | None = None,
) -> dict:
    arch = loaded.arch
    inputs, outputs = tensor_specs(arch.embed_dim, arch.num_register_tokens, precision)
    synthetic = bool(loaded.synthetic)
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "synthetic": synthetic,
        "description": (
            f"synthetic defective DINOv2 {arch.name} (demo weights generated from a seed, not a real model)"
            if synthetic else f"DINOv2 {arch.name}" + (" repaired with SINDER" if repair else "")
        ),
        "architecture": {
            "arch": arch.name, "patch_size": arch.patch_size, "embed_dim": arch.embed_dim, "depth": arch.depth,
            "num_heads": arch.num_heads, "num_register_tokens": arch.num_register_tokens, "ffn": arch.ffn,
            "interpolation": arch.interpolation, "native_grid": arch.grid,
        },
        "precision": precision,
        "max_batch_size": max_batch_size,
        "preprocessing": {
            "layout": "NHWC", "dtype": "uint8", "color": "RGB", "normalization_in_graph": True,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "resize": resolution.to_dict(arch.patch_size),
        },
        "inputs": inputs,
        "outputs": outputs,
        "defect": {
            "layer": direction_layer,
            "direction": [float(v) for v in direction.float().reshape(-1)],
            "threshold_std": float(threshold_std),
            "rule": (f"defect_mask = |cos(token, direction)| > mean + {threshold_std:g} * std of the image's |cos| "
                     "(unbiased std; SINDER, mask_thr=4)"),
            "high_norm_factor": float(high_norm_factor),
            "computed_on": f"patch tokens output by block {direction_layer} (0-based), before the final norm",
        },
        "provenance": {
            "source_checkpoint": loaded.source,
            "sha256": loaded.sha256,
            "source_format": loaded.source_format,
            "tool": "sinder",
            "tool_version": __version__,
            "torch_version": torch.__version__,
            "onnx_opset": opset,
            # domain -> version; "com.microsoft" means the graph uses onnxruntime contrib ops
            "onnx_opset_imports": opset_imports or {"": opset},
            "external_data": external_data,
            "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "parity": parity,
        "repair": repair,
        **(extra or {}),
    }
