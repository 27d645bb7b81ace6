"""All settings in one object, read from ``SINDER_*`` environment variables and validated at start."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "SINDER_"
# SINDER_* variables read by other parts of the project, not by the service: allowed beside the settings.
OTHER_VARIABLES = {"SINDER_CACHE": "the offline tool's download cache (sinder/images.py)"}
# Kubernetes gives every pod <SERVICE>_SERVICE_HOST, <SERVICE>_PORT=tcp://..., <SERVICE>_PORT_8000_TCP_ADDR, ...
# for each Service in its namespace (a Service "sinder-serve" gives SINDER_SERVE_*): not settings, and no typo.
_SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$")
_SERVICE_URL = re.compile(r"^(tcp|udp|sctp)://", re.IGNORECASE)

PROVIDER_ALIASES = {
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def _split_list(value):
    # Environment variables carry lists as "a,b,c"; JSON lists are accepted too.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Service settings. Each field is also the environment variable ``SINDER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    # Models
    model_repo: Path = Field(Path("model_repo"), description="Model repository folder (model_repo/README.md).")
    default_model: str | None = Field(
        None, description="Model used when a request names none; default: a repaired model if one is loaded, else the first by name."
    )
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="Load only these model names (comma-separated); default: every model in the repository."
    )
    version_policy: Literal["all", "latest"] = Field("all", description="Load every version, or only the highest.")
    require_all_models: bool = Field(
        False, description="Readiness needs every model to load; by default a broken model is listed as failed and the rest serve."
    )
    warmup: bool = Field(True, description="Run one batch through each model before reporting ready.")

    # Batching
    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest batch; capped by each model's own max_batch_size.")
    max_queue_delay_ms: float = Field(5.0, ge=0, le=60_000, description="How long the first queued image waits for a batch to fill while more requests for the model are being decoded; a lone request runs at once.")
    queue_size: int = Field(256, ge=1, description="Images waiting per model; beyond it requests get 429 at once.")
    max_inflight_requests: int = Field(256, ge=1, description="Requests being decoded or waiting at once; beyond it 429.")
    max_inflight_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Request-body bytes held at once across requests; beyond it 429 (bounds memory)."
    )
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of a request from its arrival (a shorter X-Request-Timeout header applies); work that cannot be expected to meet it is refused at once (429), images still queued after it are dropped (504).")

    # Limits
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body (413 beyond).")
    max_images: int = Field(64, ge=1, description="Most images per request (413 beyond).")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Most pixels of one source image, checked from its header before decoding (413 beyond)."
    )
    jpeg_draft: bool = Field(
        True, description="Decode a JPEG at least 4x its target size at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling) "
        "to no less than twice the target, then resize: 2-4x faster on large photos, pixels within a few levels "
        "(contract/preprocess.py); false decodes in full.")
    decode_threads: int = Field(4, ge=1, le=64, description="Threads decoding and resizing images off the event loop.")

    # Execution
    providers: Annotated[list[str], NoDecode] = Field(
        ["auto"], description="onnxruntime execution providers in order (cuda, tensorrt, cpu or full names); auto = CUDA when available, then CPU."
    )
    require_gpu: bool = Field(False, description="Readiness stays false while a model runs on the CPU provider.")
    device_id: int = Field(0, ge=0, description="CUDA device index.")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = onnxruntime's default.")
    workers: int = Field(
        0, ge=0, le=256, description="Service processes behind the one port (docs/workers.md); 0 = auto: one per core "
        "(at most 8) when a GPU provider is available, else 1 (onnxruntime already uses every core for one batch).")
    devices: Annotated[list[int] | None, NoDecode] = Field(
        None, description="CUDA devices for the workers, round robin (worker i gets devices[i % n]), e.g. 0,1,2,3; default: device_id for all.")

    # HTTP
    api_key: SecretStr | None = Field(None, description="If set, requests need 'Authorization: Bearer <key>' (health and metrics stay open).")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    drain_delay_s: float = Field(
        0.5, ge=0, description="On SIGTERM: seconds of answering 503 (readiness false) before the listener closes, so balancers notice."
    )
    drain_grace_s: float = Field(20.0, gt=0, description="On SIGTERM: most seconds to finish accepted work before exiting.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("models", "providers", "devices", mode="before")
    @classmethod
    def _lists(cls, value):
        return _split_list(value)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value):
        return None if value in ("", None) else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        out = []
        for name in value:
            key = name.strip()
            if key.lower() == "auto":
                out.append("auto")
            elif key.lower() in PROVIDER_ALIASES:
                out.append(PROVIDER_ALIASES[key.lower()])
            elif key.endswith("ExecutionProvider"):
                out.append(key)
            else:
                raise ValueError(f"unknown provider {name!r}: use auto, cuda, tensorrt, cpu or an onnxruntime provider name")
        if not out:
            raise ValueError("providers must not be empty")
        return out

    @model_validator(mode="after")
    def _limits_fit(self):
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(f"{env_name('max_inflight_bytes')} ({self.max_inflight_bytes}) must be at least "
                             f"{env_name('max_body_bytes')} ({self.max_body_bytes})")
        return self

    @model_validator(mode="after")
    def _repo_exists(self):
        if not self.model_repo.is_dir():
            raise ValueError(f"{env_name('model_repo')} (or --model-repo): {str(self.model_repo)!r} is not a folder "
                             "(run `sinder build --demo` to make one)")
        return self

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0


def env_name(field: str) -> str:
    """The environment variable of a setting: ``max_images`` -> ``SINDER_MAX_IMAGES``."""
    return f"{ENV_PREFIX}{field.upper()}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One message per ``SINDER_*`` variable that no setting reads, with the closest known name.

    A misspelled setting would otherwise be ignored silently (``SINDER_API_KEYS`` would serve without a key).
    """
    known = {env_name(name) for name in Settings.model_fields}
    messages = []
    for name in sorted(k for k in environ if k.upper().startswith(ENV_PREFIX)):
        if name.upper() in known or name.upper() in OTHER_VARIABLES:  # pydantic-settings ignores case
            continue
        if _SERVICE_LINK.search(name.upper()) or (name.upper().endswith("_PORT") and _SERVICE_URL.match(environ[name])):
            continue
        close = difflib.get_close_matches(name.upper(), sorted(known | set(OTHER_VARIABLES)), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(known))}"
        messages.append(f"unknown setting {name}{hint}")
    return messages


def settings_error_line(exc: Exception) -> str:
    """One line naming the environment variable of each invalid setting, for the command line."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = [str(p) for p in err.get("loc", ())]
            msg = err.get("msg", "").removeprefix("Value error, ")
            if loc and loc[0] in Settings.model_fields:
                where = ".".join([env_name(loc[0]), *loc[1:]])
                value = err.get("input")
                shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and loc[0] != "api_key" else ""
                parts.append(f"{where}{shown}: {msg}")
            else:
                parts.append(msg)
        return "invalid settings: " + "; ".join(parts)
    return f"invalid settings: {exc}"
