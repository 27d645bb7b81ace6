"""The ``manifest.json`` of an export, built from the loaded model (the fields are the
contract's: ``contract/manifest.py``, documented in model_repo/README.md)."""

from __future__ import annotations

from datetime import datetime, timezone

import torch

from contract.defects import HIGH_NORM_FACTOR, THRESHOLD_STD
from contract.manifest import (Architecture, Manifest, Preprocessing, Provenance, Variant, defect_block,
                               tensor_specs)
from contract.preprocess import IMAGENET_MEAN, IMAGENET_STD, Resize

from .. import __version__
from ..model import LoadedModel

# The image sizes an export accepts and its default resize: the contract's ``Resize``
# (``multiple_of`` is set to the model's patch size at export).
Resolution = Resize
REPAIR_SUMMARY_KEYS = ("before", "after", "fidelity", "iterations", "seconds", "stopped_by_rule",
                       "clean_fraction", "output", "training_preprocessing")


def check_resolution(resolution: Resize, patch_size: int) -> Resize:
    """``resolution`` for a model of ``patch_size``: every side bound a positive multiple of it."""
    for field in ("short_side", "min_side", "max_side"):
        value = getattr(resolution, field)
        if value % patch_size:
            raise ValueError(f"{field} must be a positive multiple of the patch size {patch_size}, not {value}")
    return resolution.model_copy(update={"multiple_of": patch_size, "policy": "keep_aspect"})


def repair_summary_of(report: dict | None) -> dict | None:
    """The manifest's ``repair`` block from a ``repair_report.json`` (or an already short summary)."""
    if report is None:
        return None
    picked = {k: report[k] for k in REPAIR_SUMMARY_KEYS if k in report}
    return picked or dict(report)


def _description(loaded: LoadedModel, repaired: bool, registers: bool = False) -> str:
    name = loaded.arch.name
    method = " repaired with SINDER" if repaired else (" with a test-time register" if registers else "")
    if loaded.synthetic:
        return f"synthetic defective DINOv2 {name}{method} (demo weights generated from a seed, not a real model)"
    return f"DINOv2 {name}{method}"


def build_manifest(
    *,
    loaded: LoadedModel,
    name: str,
    version: int,
    precision: str,
    max_batch_size: int,
    resolution: Resize,
    direction: torch.Tensor,
    direction_layer: int,
    parity: dict,
    repair: dict | None,
    opset: int,
    external_data: bool,
    threshold_std: float = THRESHOLD_STD,
    high_norm_factor: float = HIGH_NORM_FACTOR,
    variant: Variant | None = None,
    export_seconds: float | None = None,
    opset_imports: dict[str, int] | None = None,
    registers: dict | None = None,
    direction_record: dict | None = None,
) -> Manifest:
    arch = loaded.arch
    inputs, outputs = tensor_specs(arch.embed_dim, arch.num_register_tokens, precision)
    training = (repair or {}).get("training_preprocessing")
    return Manifest(
        name=name, version=version, synthetic=bool(loaded.synthetic),
        description=_description(loaded, bool(repair), bool(registers)),
        architecture=Architecture(
            arch=arch.name, patch_size=arch.patch_size, embed_dim=arch.embed_dim, depth=arch.depth,
            num_heads=arch.num_heads, num_register_tokens=arch.num_register_tokens, ffn=arch.ffn,
            interpolation=arch.interpolation, native_grid=arch.grid),
        precision=precision,
        max_batch_size=max_batch_size,
        preprocessing=Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=resolution,
                                    training=Resize.model_validate(training) if training else None),
        inputs=inputs,
        outputs=outputs,
        defect=defect_block(direction.float().reshape(-1).tolist(), direction_layer, threshold_std, high_norm_factor,
                            source=(direction_record or {}).get("used", "predicted"), choice=direction_record),
        variant=variant or Variant(),
        provenance=Provenance(
            source_checkpoint=loaded.source, sha256=loaded.sha256, source_format=loaded.source_format,
            tool="sinder", tool_version=__version__, torch_version=torch.__version__, onnx_opset=opset,
            onnx_opset_imports=opset_imports or {"": opset}, external_data=external_data,
            exported_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
        parity=parity,
        repair=repair,
        registers=registers,
        export_seconds=export_seconds,
    )
