"""Read a checkpoint file into a flat ``{name: tensor}`` dict without executing anything in it.

Pickles are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and refuses any other global; safetensors files hold no code at all. The file type
is sniffed from its first bytes (a safetensors file named ``.bin`` still loads), and the
common containers are unwrapped: ``{"model": sd}``, ``{"state_dict": sd}``, ``{"teacher": sd}``
and prefixes such as ``module.``, ``backbone.``, ``teacher.backbone.`` or ``dinov2.``.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ._keys import name_keys

# A key ending in one of these marks the root of a DINOv2 backbone inside a larger state dict.
ANCHORS = (
    "patch_embed.proj.weight",  # official and SINDER
    "embeddings.patch_embeddings.projection.weight",  # Hugging Face
)
# Wrapper keys seen in training checkpoints, most wanted first (the teacher is what DINOv2 releases).
CONTAINER_KEYS = ("teacher", "model_ema", "ema", "state_dict", "model", "module", "backbone", "net")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _describe_unpickling_error(exc: Exception) -> str:
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"refused to unpickle: it holds the Python object {found.group(1)}, not only tensors "
                "(a pickled model or arbitrary code; save model.state_dict() instead)")
    # torch wraps the real reason in advice to retry with weights_only=False, which we never give.
    reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|$)", text, re.S)
    detail = " ".join((reason.group(1) if reason else text).split()) or type(exc).__name__
    return f"not a PyTorch checkpoint, or a corrupt one ({detail[:200]})"


def _check_zip(path: Path) -> None:
    """torch does not verify the CRCs of a zip checkpoint: flipped bytes in a tensor load silently."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({str(exc)[:200]})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt PyTorch checkpoint (checksum mismatch in {bad})")


def head_is_zip(path: Path) -> bool:
    """torch.load can memory-map only the zip format (torch >= 1.6), not the legacy pickle stream."""
    with path.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _load_torch(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
            # memory-mapped: the tensors are the file's pages, not a second copy (ViT-g is 4.5 GB)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=head_is_zip(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {_describe_unpickling_error(exc)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as exc:
        if "weights only" in str(exc).lower() or "GLOBAL" in str(exc):
            raise CheckpointError(f"{path}: {_describe_unpickling_error(exc)}") from None
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({text[:160]})") from None


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _mmap_safetensors(path: Path) -> dict | None:
    """The tensors of a safetensors file as views of one private memory map of it (no copy), or None
    when the file has an entry this reader does not map (an unknown dtype, a misaligned offset)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(entry["dtype"])
        begin, end = (8 + n + o for o in entry["data_offsets"])
        if dtype is None:
            return None
        item = torch.empty((), dtype=dtype).element_size()
        shape = [int(s) for s in entry["shape"]]
        count = 1
        for s in shape:
            count *= s
        if begin % item or end - begin != count * item or end > size:
            return None
        out[name] = torch.empty(0, dtype=dtype).set_(storage, begin // item, shape)
    return out


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        mapped = _mmap_safetensors(path)
        if mapped is not None:
            return mapped
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, struct.error):
        pass  # safetensors' own reader names what is wrong with the file
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({str(exc)[:200]})") from None


def _load_file(path: Path):
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if _is_safetensors(head, size):
        return _load_safetensors(path)
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: not a safetensors file (bad header)")
    if head[:1] in (b"{", b"[") or head.lstrip()[:1] in (b"{", b"["):
        raise CheckpointError(f"{path}: a JSON/text file, not a checkpoint")
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a PyTorch or safetensors checkpoint (unrecognised file header)")
    obj = _load_torch(path)
    if head[:4] == b"PK\x03\x04":
        _check_zip(path)
    return obj


def _read_sharded(index: Path) -> dict:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index}: unreadable shard index ({exc})") from None
    merged: dict = {}
    for shard in shards:
        part = _load_file(index.parent / shard)
        if not isinstance(part, dict):
            raise CheckpointError(f"{index.parent / shard}: not a state dict")
        merged.update(part)
    return merged


def weights_file(path: Path) -> Path:
    """The weights file behind ``path``: the file itself, or the one a model folder holds."""
    if not path.is_dir():
        return path
    for name in WEIGHT_FILES + INDEX_FILES:
        if (path / name).is_file():
            return path / name
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pth", ".pt", ".bin"))
    if len(candidates) == 1:
        return candidates[0]
    raise CheckpointError(
        f"{path}: a directory without a single checkpoint file (looked for {', '.join(WEIGHT_FILES)})")


def load_raw(path: str | Path):
    """Whatever the file holds, read safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    file = weights_file(path)
    if file.name in INDEX_FILES:
        return _read_sharded(file)
    return _load_file(file)


def _tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj, path: Path):
    """Descend through wrapper dicts until a dict that holds tensors."""
    for _ in range(4):
        if _tensor_dict(obj):
            return obj
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            break
        obj = inner
    kind = type(obj).__name__
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        raise CheckpointError(f"{path}: not a state dict (a {kind} without tensors; keys: {name_keys(keys)})")
    raise CheckpointError(f"{path}: not a state dict (holds a {kind})")


def _root_prefix(keys: list[str]) -> str | None:
    roots = {k[: -len(a)] for k in keys for a in ANCHORS if k.endswith(a) and (k == a or k[-len(a) - 1] == ".")}
    if not roots:
        return None

    def rank(prefix: str) -> tuple:
        return ("teacher" not in prefix, "ema" not in prefix, len(prefix), prefix)

    return min(roots, key=rank)


def strip_to_backbone(sd: dict) -> dict:
    """Keep the backbone's entries, without the prefix that wraps them (``module.``, ``teacher.backbone.``...)."""
    keys = [k for k in sd if isinstance(k, str)]
    prefix = _root_prefix(keys)
    if not prefix:
        return dict(sd)
    return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone state dict held by ``path`` (a file, or a Hugging Face model folder)."""
    path = Path(path)
    sd = strip_to_backbone(_unwrap(load_raw(path), path))
    bad = [str(k) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a plain state dict; entries that are not tensors: {name_keys(bad)}")
    return sd
