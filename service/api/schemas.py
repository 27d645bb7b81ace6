"""Request and response schemas (pydantic); they are the OpenAPI contract in openapi.yaml."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.api.encode import Encoding
from service.core.features import DEFAULT_OUTPUTS, FeatureOptions

OutputName = Literal["cls", "pooled", "patch_tokens", "diagnostics", "registers"]


def parse_model_ref(model) -> tuple[str | None, int | None]:
    """``None``, ``"name"``, ``"name:3"`` or a ``ModelRef`` -> (name, version)."""
    if model is None:
        return None, None
    if isinstance(model, ModelRef):
        return model.name, model.version
    name, sep, version = str(model).rpartition(":")
    if sep and version.isdigit():
        return name, int(version)
    return str(model), None


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="Model name (a folder of the model repository).")
    version: int | None = Field(None, ge=1, description="Version; default: the highest loaded.")


class ResizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resize: Literal["keep_aspect", "native", "stretch"] | None = Field(
        None,
        description=(
            "How images reach the model's input size. `keep_aspect` (default): scale so the short side is "
            "`short_side` (default: the manifest's `preprocessing.resize.short_side`, 224 for DINOv2), keep the aspect "
            "ratio, round both sides to the patch size, bounded by the manifest's min/max side and max pixels. "
            "`native`: keep the image's own size, rounded and bounded the same way. `stretch`: exactly `resolution`."
        ),
    )
    short_side: int | None = Field(None, ge=1, le=16384, description="Target short side for `keep_aspect`, before rounding.")
    resolution: tuple[int, int] | None = Field(
        None,
        description="Exact model input `[height, width]`, multiples of the patch size within the manifest's bounds; implies `stretch`.",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.resolution is not None:
            if self.resize not in (None, "stretch"):
                raise ValueError(f"resolution needs resize 'stretch', not {self.resize!r}")
            if min(self.resolution) < 1:
                raise ValueError("resolution sides must be positive")
        elif self.resize == "stretch":
            raise ValueError("resize 'stretch' needs resolution [height, width]")
        return self

    def resize_policy(self) -> str:
        return self.resize or ("stretch" if self.resolution is not None else "keep_aspect")


class FeatureOptionsModel(ResizeOptions):
    model: str | ModelRef | None = Field(
        None, description="`name`, `name:version` or `{name, version}`; default: the service's default model."
    )
    outputs: list[OutputName] = Field(
        list(DEFAULT_OUTPUTS), min_length=1,
        description=(
            "What to return per image: `cls` (CLS token), `pooled` (mean of patch tokens), `patch_tokens` ([h, w, C]), "
            "`diagnostics` (defect token count and fraction, max/median token-norm ratio), `registers` (models with registers). "
            "Default: `cls`, `pooled`, `patch_tokens` and `diagnostics`, leaving out any the model lacks."
        ),
    )
    dtype: Literal["float32", "float16"] = Field("float32", description="Element type of returned arrays.")
    encoding: Literal["base64", "json"] = Field(
        "base64", description="`base64`: `{dtype, shape, data}` with little-endian bytes; `json`: nested numbers."
    )
    diagnostics_maps: bool = Field(False, description="Add the per-token maps `norms`, `alignment`, `mask` to diagnostics.")

    def to_options(self) -> FeatureOptions:
        return FeatureOptions(
            outputs=tuple(dict.fromkeys(self.outputs)) if "outputs" in self.model_fields_set else None,
            resize=self.resize_policy(), short_side=self.short_side,
            resolution=tuple(self.resolution) if self.resolution else None,
        )

    def to_encoding(self) -> Encoding:
        return Encoding(dtype=self.dtype, encoding=self.encoding, diagnostics_maps=self.diagnostics_maps)

    def model_ref(self) -> tuple[str | None, int | None]:
        return parse_model_ref(self.model)


Base64Image = Annotated[str, Field(min_length=1, json_schema_extra={"contentEncoding": "base64", "contentMediaType": "image/*"})]


class FeaturesRequest(FeatureOptionsModel):
    images: list[Base64Image] = Field(
        min_length=1,
        description=(
            "Images as base64 strings or `data:image/...;base64,` URIs (JPEG, PNG, WebP, GIF, BMP, TIFF, ...); "
            "at most SINDER_MAX_IMAGES (413 beyond)."
        ),
    )


def _no_null_defaults(schema: dict) -> None:
    # Form fields are absent or text, never null: keep ``default: null`` out of the multipart schemas.
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]


class FeaturesMultipart(BaseModel):
    """multipart/form-data: repeat `images` once per file; options as form fields (none is nullable)."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)

    images: list[bytes] = Field(min_length=1, json_schema_extra={"items": {"type": "string", "format": "binary"}},
                                description="One part per image file (or base64 text).")
    model: str = Field(None, min_length=1, description="`name` or `name:version`.")
    outputs: list[OutputName] = Field(None, min_length=1, description="Repeat the field, or one comma-separated value.")
    dtype: Literal["float32", "float16"] = None
    encoding: Literal["base64", "json"] = None
    diagnostics_maps: bool = None
    resize: Literal["keep_aspect", "native", "stretch"] = None
    short_side: int = Field(None, ge=1, le=16384)
    resolution: str = Field(None, pattern=r"^[0-9]+\s*[,x]\s*[0-9]+$", description="`H,W` or `HxW`; implies `stretch`.")


def _exactly_one_image(image, images) -> None:
    if (image is None) == (images is None):
        raise ValueError("send one image, as `image` or as `images` (a list of one), not both" if image is not None
                         else "send one image, as `image` or as `images` (a list of one)")


class VisualizeRequest(ResizeOptions):
    image: Base64Image | None = Field(None, description="One image, base64 or a data URI (or send `images`).")
    images: list[Base64Image] | None = Field(
        None, min_length=1, max_length=1, description="The same image as a one-item list: /features' field name.")
    model: str | ModelRef | None = Field(None, description="Model to draw; the loaded models of its family are added.")
    compare: bool = Field(True, description="Add a row for every loaded model of the family (the original, SINDER, test-time registers, ..., by the manifests' `variant`).")

    @model_validator(mode="after")
    def _one_image(self):
        _exactly_one_image(self.image, self.images)
        return self

    def model_ref(self) -> tuple[str | None, int | None]:
        return parse_model_ref(self.model)

    def to_options(self) -> FeatureOptions:
        return FeatureOptions(outputs=("patch_tokens",), resize=self.resize_policy(), short_side=self.short_side,
                              resolution=tuple(self.resolution) if self.resolution else None)


class VisualizeMultipart(BaseModel):
    """multipart/form-data: one file part named `image` (or `images`, as for /features); options as form fields."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)

    image: bytes = Field(None, json_schema_extra={"type": "string", "format": "binary"}, description="The image file.")
    images: list[bytes] = Field(None, min_length=1, max_length=1, json_schema_extra={"items": {"type": "string", "format": "binary"}},
                                description="The image file under /features' field name (one part).")
    model: str = Field(None, min_length=1, description="`name` or `name:version`.")
    compare: bool = None
    resize: Literal["keep_aspect", "native", "stretch"] = None
    short_side: int = Field(None, ge=1, le=16384)
    resolution: str = Field(None, pattern=r"^[0-9]+\s*[,x]\s*[0-9]+$", description="`H,W` or `HxW`; implies `stretch`.")

    @model_validator(mode="after")
    def _one_image(self):
        _exactly_one_image(self.image, self.images)
        return self


class EncodedArray(BaseModel):
    dtype: str = Field(description="numpy dtype name: float32, float16 or bool.")
    shape: list[int]
    data: str = Field(description="base64 of the array's little-endian bytes, C order.")


Array = EncodedArray | list[Any]


class Diagnostics(BaseModel):
    defect_tokens: int = Field(description="Tokens the model's rule marks defective (|cos| to the defect direction > mean + k·std).")
    defect_fraction: float = Field(description="defect_tokens / (h·w).")
    max_median_norm_ratio: float | None = Field(description="Largest token norm over the median token norm (last block, before the final norm).")
    norms: Array | None = Field(None, description="[h, w] token norms (with diagnostics_maps).")
    alignment: Array | None = Field(None, description="[h, w] |cosine| to the defect direction (with diagnostics_maps).")
    mask: Array | None = Field(None, description="[h, w] defect mask, bool (with diagnostics_maps).")


class Timing(BaseModel):
    queue_ms: float = Field(description="Time this image waited for its batch.")
    inference_ms: float = Field(description="Backend time of the batch that ran this image.")
    batch_size: int = Field(description="Images in that batch (this request's and others').")


class ImageResult(BaseModel):
    index: int
    grid: tuple[int, int] = Field(description="Patch grid [h, w] = model input size / patch size.")
    cls: Array | None = Field(None, description="[C]")
    pooled: Array | None = Field(None, description="[C]")
    patch_tokens: Array | None = Field(None, description="[h, w, C]")
    registers: Array | None = Field(None, description="[R, C]")
    diagnostics: Diagnostics | None = None
    timing: Timing


class RequestTiming(BaseModel):
    decode_ms: float
    total_ms: float


class FeaturesResponse(BaseModel):
    model: str
    model_version: int
    results: list[ImageResult] = Field(description="One entry per image, in request order.")
    timing: RequestTiming | None = None


class Liveness(BaseModel):
    status: Literal["alive", "dead"]
    reasons: list[str] = Field(default_factory=list, description="Why not alive (empty when alive).")


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(description="Why not ready (empty when ready).")
    models: dict[str, str] = Field(description="`name:version` → state (pending, loading, ready, failed).")


class ModelSummary(BaseModel):
    name: str
    version: int
    state: str = Field(description="pending, loading, ready or failed.")
    error: str | None = Field(None, description="Why the model failed to load.")
    provider: str | None = Field(None, description="Execution provider the session really uses (from the session itself).")
    default: bool = Field(description="Used when a request names no model.")
    synthetic: bool | None = None
    repaired: bool | None = Field(None, description="True for a SINDER-repaired model (manifest has a repair summary).")
    patch_size: int | None = None
    embed_dim: int | None = None
    description: str | None = None


class ModelList(BaseModel):
    default_model: str | None
    models: list[ModelSummary]


class DefectStats(BaseModel):
    images: int = Field(description="Images served since start.")
    mean_defect_fraction: float | None = Field(description="Mean fraction of defective tokens over those images.")


class VariantLink(BaseModel):
    name: str
    version: int
    kind: str = Field(description="original, sinder (SINDER repair), ttr (test-time registers), ...")
    of: str | None = Field(None, description="The original it derives from; null for the original.")


class ModelDetail(ModelSummary):
    versions: list[ModelSummary] = Field(description="Every version of this model and its state.")
    architecture: dict[str, Any] | None = None
    precision: str | None = None
    preprocessing: dict[str, Any] | None = None
    max_batch_size: int | None = Field(None, description="Batch size the service uses for this model.")
    outputs: list[dict[str, Any]] = Field(description="Graph outputs (name, dtype, shape).")
    defect: dict[str, Any] | None = Field(None, description="Manifest's defect rule (direction replaced by its length).")
    defect_stats: DefectStats
    repair: dict[str, Any] | None = Field(None, description="Repair report summary, for a repaired model.")
    registers: dict[str, Any] | None = Field(
        None, description="Test-time registers: the neurons the graph edits, how they were found, held-out figures.")
    variant: VariantLink | None = Field(None, description="This model's place in its family (from its manifest).")
    variants: list[VariantLink] = Field(
        default_factory=list, description="The loaded family: the original and every variant of it (SINDER, test-time "
                                          "registers, ...), in the order /visualize draws them.")
    provenance: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    queue_depth: int | None = None
    load_seconds: float | None = None
