"""``manifest.json``: everything a server needs that the ONNX file does not say, as a typed model.

The exporter builds a ``Manifest`` and writes ``Manifest.model_dump_json``; the service
parses one with ``read_manifest`` once, when the model loads, and uses the typed fields
from then on. A bad manifest raises ``ManifestError`` naming the field
(``defect.threshold_std: ...``). ``python -m contract.manifest`` prints the JSON Schema
(committed as ``contract/manifest.schema.json``; a test keeps them equal).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import defects
from .errors import ManifestError
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Resize

FORMAT_VERSION = 2  # 2: variant links, training preprocessing, std convention
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")

# The graph's tensors (model_repo/README.md, "The graph").
INPUT = "images"
CLS, PATCH, REGISTERS = "cls_token", "patch_tokens", "register_tokens"
NORMS, ALIGNMENT, MASK = "token_norms", "defect_alignment", "defect_mask"
REQUIRED_OUTPUTS = (CLS, PATCH)
DIAGNOSTIC_OUTPUTS = (NORMS, ALIGNMENT, MASK)
FEATURE_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "float32"}
# Variant kinds written by the tool; other lowercase names are accepted for later methods.
ORIGINAL, SINDER, TTR = "original", "sinder", "ttr"

_Strict = ConfigDict(extra="forbid")


class Architecture(BaseModel):
    model_config = _Strict

    arch: str
    patch_size: int = Field(ge=1)
    embed_dim: int = Field(ge=1)
    depth: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    num_register_tokens: int = Field(0, ge=0)
    ffn: str = "mlp"
    interpolation: str = "official"
    native_grid: int | None = Field(None, ge=1)


class Preprocessing(BaseModel):
    model_config = _Strict

    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    color: Literal["RGB"] = "RGB"
    normalization_in_graph: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: Resize = Resize()
    training: Resize | None = Field(None, description="How the repair's training images were prepared "
                                                     "(policy center_square); null for a model not trained here.")

    @field_validator("std")
    @classmethod
    def _positive(cls, std):
        if min(std) <= 0:
            raise ValueError("every std must be positive")
        return std


class TensorSpec(BaseModel):
    model_config = _Strict

    name: str
    dtype: Literal["uint8", "float32", "float16", "bool"]
    shape: list[int] = Field(description="-1 for the batch and image-dependent dims")
    meaning: str = ""


class Defect(BaseModel):
    model_config = _Strict

    layer: int = Field(ge=0, description="Block (0-based) whose output tokens the diagnostics use.")
    direction: list[float] = Field(min_length=1, description="Unit singular defect direction, embed_dim floats.")
    threshold_std: float = Field(defects.THRESHOLD_STD, gt=0)
    std_ddof: Literal[1] = Field(defects.STD_DDOF, description="1: sample standard deviation (Bessel).")
    high_norm_factor: float = Field(defects.HIGH_NORM_FACTOR, gt=0)
    rule: str = ""
    computed_on: str | None = None
    source: Literal["predicted", "observed"] = Field(
        "predicted", description="predicted: the paper's direction from the weights; observed: the leading "
                                 "direction of the model's high-norm tokens on images (sinder --direction).")
    choice: dict[str, Any] | None = Field(
        None, description="How the direction was chosen: the requested mode, per-layer agreement of predicted and "
                          "observed directions, warnings (sinder --direction).")

    @field_validator("direction")
    @classmethod
    def _finite(cls, direction):
        if not all(math.isfinite(v) for v in direction) or not any(direction):
            raise ValueError("must be finite and non-zero")
        return direction


class Variant(BaseModel):
    """Which variant of a source model this is: the links between original and repaired models."""

    model_config = _Strict

    kind: str = Field(ORIGINAL, pattern=r"^[a-z][a-z0-9_]*$",
                      description="original, sinder (SINDER repair), ttr (test-time registers), ...")
    of: str | None = Field(None, description="Model folder of the original this one was derived from; "
                                             "null for an original.")

    @model_validator(mode="after")
    def _linked(self) -> "Variant":
        if (self.kind == ORIGINAL) != (self.of is None):
            raise ValueError("an original has no 'of'; every other kind names the model it was derived from")
        return self


class Provenance(BaseModel):
    model_config = _Strict

    source_checkpoint: str | None = None
    sha256: str | None = None
    source_format: str | None = None
    tool: str = "sinder"
    tool_version: str
    torch_version: str | None = None
    onnx_opset: int | None = None
    onnx_opset_imports: dict[str, int] | None = Field(
        None, description='domain -> version; "com.microsoft" means onnxruntime contrib ops')
    external_data: bool = False
    exported_at: str | None = None


class Manifest(BaseModel):
    model_config = _Strict

    format_version: int = Field(FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    name: str
    version: int = Field(ge=1)
    synthetic: bool = False
    description: str = ""
    architecture: Architecture
    precision: Literal["fp32", "fp16", "int8"]
    max_batch_size: int = Field(ge=1)
    preprocessing: Preprocessing = Preprocessing()
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    defect: Defect
    variant: Variant = Variant()
    provenance: Provenance
    parity: dict[str, Any] = Field(default_factory=dict, description="Export parity figures (model_repo/README.md).")
    repair: dict[str, Any] | None = Field(None, description="Summary of repair_report.json; null for an original.")
    registers: dict[str, Any] | None = Field(
        None, description="Test-time registers (variant ttr): the neurons the graph edits ({layer: [neuron, ...]}), "
                          "how they were found and the held-out figures; null otherwise.")
    export_seconds: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        patch = self.architecture.patch_size
        if self.preprocessing.resize.multiple_of % patch:
            raise ValueError(f"preprocessing.resize.multiple_of {self.preprocessing.resize.multiple_of} is not a "
                             f"multiple of architecture.patch_size {patch}")
        if len(self.defect.direction) != self.architecture.embed_dim:
            raise ValueError(f"defect.direction has {len(self.defect.direction)} values; "
                             f"architecture.embed_dim is {self.architecture.embed_dim}")
        names = [t.name for t in self.outputs]
        missing = [n for n in REQUIRED_OUTPUTS if n not in names]
        if missing:
            raise ValueError(f"outputs lack {missing}")
        return self

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def tensor_specs(embed_dim: int, num_register_tokens: int, precision: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs: name, dtype, shape (-1 for batch and image-dependent dims), meaning."""
    feat = FEATURE_DTYPES[precision]
    spec = TensorSpec
    outputs = [
        spec(name=CLS, dtype=feat, shape=[-1, embed_dim], meaning="CLS token after the final LayerNorm (x_norm_clstoken)"),
        spec(name=PATCH, dtype=feat, shape=[-1, -1, -1, embed_dim],
             meaning="patch tokens after the final LayerNorm (x_norm_patchtokens), [B, H/p, W/p, C]"),
    ]
    if num_register_tokens:
        outputs.append(spec(name=REGISTERS, dtype=feat, shape=[-1, num_register_tokens, embed_dim],
                            meaning="register tokens after the final LayerNorm (x_norm_regtokens)"))
    outputs += [
        spec(name=NORMS, dtype="float32", shape=[-1, -1, -1],
             meaning="L2 norm of each patch token of the defect layer (defect.layer), before the final norm"),
        spec(name=ALIGNMENT, dtype="float32", shape=[-1, -1, -1],
             meaning="|cosine| between that token and the singular defect direction (defect.direction)"),
        spec(name=MASK, dtype="bool", shape=[-1, -1, -1],
             meaning="defect_alignment > mean + threshold_std * std (sample) of the image's alignments"),
    ]
    inputs = [spec(name=INPUT, dtype="uint8", shape=[-1, -1, -1, 3],
                   meaning="RGB pixels [B, H, W, 3]; H and W multiples of the patch size within the bounds")]
    return inputs, outputs


def defect_block(direction, layer: int, threshold_std: float = defects.THRESHOLD_STD,
                 high_norm_factor: float = defects.HIGH_NORM_FACTOR, source: str = "predicted",
                 choice: dict | None = None) -> Defect:
    """The manifest's ``defect`` for a unit ``direction`` (any float sequence) used at block ``layer``."""
    return Defect(layer=layer, direction=[float(v) for v in direction], threshold_std=threshold_std,
                  high_norm_factor=high_norm_factor, rule=defects.rule_text(threshold_std),
                  computed_on=f"patch tokens output by block {layer} (0-based), before the final norm",
                  source=source, choice=choice)


def describe(exc: ValidationError) -> str:
    """``field.path: message`` for each error, joined: the field a bad manifest got wrong."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_manifest(text: str | bytes, source: str = "manifest.json") -> Manifest:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: expected a JSON object")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{source}: {describe(exc)}") from None


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate ``path``; ``ManifestError`` names the file and the bad field."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ManifestError(f"{path} is missing") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    return parse_manifest(text, str(path))


def json_schema() -> str:
    return json.dumps(Manifest.model_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m contract.manifest > contract/manifest.schema.json
    sys.stdout.write(json_schema())
