"""The Triton ``config.pbtxt`` of a model folder (protobuf text format, onnxruntime backend):
written by the exporter, read by the service and the layout check.

Dims exclude the batch dimension (``max_batch_size`` > 0 makes Triton add it) and use -1
for the image-dependent ones. See Triton's model configuration docs: ``name``,
``platform``, ``default_model_filename``, ``max_batch_size``, ``input``/``output``,
``dynamic_batching``, ``instance_group``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LayoutError
from .manifest import TensorSpec

TRITON_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bool": "TYPE_BOOL"}
INSTANCE_KINDS = ("KIND_GPU", "KIND_CPU", "KIND_AUTO")
PLATFORM = "onnxruntime_onnx"
DEFAULT_MODEL_FILENAME = "model.onnx"


def _spec(t: TensorSpec | dict) -> TensorSpec:
    return t if isinstance(t, TensorSpec) else TensorSpec.model_validate(t)


def _tensor(t: TensorSpec) -> str:
    return (
        "  {\n"
        f'    name: "{t.name}"\n'
        f"    data_type: {TRITON_DTYPES[t.dtype]}\n"
        f"    dims: [ {', '.join(str(d) for d in t.shape[1:])} ]\n"
        "  }"
    )


def config_pbtxt(
    name: str,
    inputs: list[TensorSpec | dict],
    outputs: list[TensorSpec | dict],
    max_batch_size: int,
    instance_kind: str = "KIND_GPU",
    instance_count: int = 1,
    max_queue_delay_us: int = 5000,
    default_model_filename: str = DEFAULT_MODEL_FILENAME,
) -> str:
    """``inputs``/``outputs`` are the manifest's tensors, the batch dim first."""
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance kind must be one of {INSTANCE_KINDS}, not {instance_kind!r}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
    ins = ",\n".join(_tensor(_spec(t)) for t in inputs)
    outs = ",\n".join(_tensor(_spec(t)) for t in outputs)
    preferred = sorted({b for b in (4, 8, 16, 32, max_batch_size) if b <= max_batch_size})
    return (
        f'name: "{name}"\n'
        f'platform: "{PLATFORM}"\n'
        f'default_model_filename: "{default_model_filename}"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{ins}\n]\n"
        f"output [\n{outs}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        "instance_group [\n"
        "  {\n"
        f"    count: {instance_count}\n"
        f"    kind: {instance_kind}\n"
        "  }\n"
        "]\n"
    )


# -- reading ----------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(#[^\n]*|"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|-?[0-9][\w.+-]*|[{}\[\]:,;<>])')


def _tokens(text: str) -> list[str]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise LayoutError(f"config.pbtxt: cannot parse near {text[pos:pos + 30]!r}")
        if not match.group(1).startswith("#"):  # comments run to the end of the line
            out.append(match.group(1))
        pos = match.end()
    return out


def _value(tok: str):
    if tok.startswith('"'):
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    try:
        return int(tok)
    except ValueError:
        try:
            return float(tok)
        except ValueError:
            return tok  # an enum name or true/false


def _message(toks: list[str], i: int, close: str | None) -> tuple[dict, int]:
    """Fields until ``close``; every field maps to the list of its values (repeated or not)."""
    fields: dict[str, list] = {}
    while i < len(toks) and toks[i] != close:
        key = toks[i]
        i += 1
        if i < len(toks) and toks[i] == ":":
            i += 1
        if i >= len(toks):
            raise LayoutError(f"config.pbtxt: field {key!r} has no value")
        if toks[i] == "[":
            i += 1
            while toks[i] != "]":
                value, i = _one(toks, i)
                fields.setdefault(key, []).append(value)
                if toks[i] == ",":
                    i += 1
            i += 1
        else:
            value, i = _one(toks, i)
            fields.setdefault(key, []).append(value)
        if i < len(toks) and toks[i] in ",;":
            i += 1
    if close is not None and i >= len(toks):
        raise LayoutError(f"config.pbtxt: missing {close!r}")
    return fields, i + (close is not None)


def _one(toks: list[str], i: int):
    if toks[i] in "{<":
        return _message(toks, i + 1, "}" if toks[i] == "{" else ">")
    return _value(toks[i]), i + 1


def parse_config(text: str) -> dict[str, list]:
    """The fields of a config.pbtxt: each name maps to the list of its values (a message is a dict)."""
    try:
        fields, _ = _message(_tokens(text), 0, None)
    except IndexError:
        raise LayoutError("config.pbtxt: ends in the middle of a field") from None
    return fields


@dataclass(frozen=True)
class TritonConfig:
    name: str | None
    platform: str | None
    backend: str | None
    max_batch_size: int
    default_model_filename: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _first(fields: dict, key: str, default=None):
    values = fields.get(key)
    return values[0] if values else default


def read_config(path: str | Path) -> TritonConfig:
    """The parts of ``config.pbtxt`` the service and the layout check use; ``LayoutError`` when unreadable."""
    path = Path(path)
    try:
        fields = parse_config(path.read_text())
    except OSError as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from None
    except LayoutError as exc:
        raise LayoutError(f"{path}: {exc}") from None
    mbs = _first(fields, "max_batch_size", 0)
    if not isinstance(mbs, int) or mbs < 0:
        raise LayoutError(f"{path}: max_batch_size must be a non-negative integer, not {mbs!r}")
    return TritonConfig(
        name=_first(fields, "name"), platform=_first(fields, "platform"), backend=_first(fields, "backend"),
        max_batch_size=mbs,
        default_model_filename=_first(fields, "default_model_filename", DEFAULT_MODEL_FILENAME),
        inputs=tuple(_first(t, "name") for t in fields.get("input", [])),
        outputs=tuple(_first(t, "name") for t in fields.get("output", [])),
    )
