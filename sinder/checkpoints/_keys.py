"""Small helpers for error messages that name keys and shapes."""

from __future__ import annotations

import re
from typing import Iterable

import torch


def shape_of(value) -> str:
    if isinstance(value, torch.Tensor):
        return "x".join(str(d) for d in value.shape) or "scalar"
    return type(value).__name__


def name_keys(keys: Iterable[str], limit: int = 6) -> str:
    """``a, b, c and 4 more``: a bounded, one-line list of keys."""
    keys = sorted(keys, key=_order)
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} and {len(keys) - limit} more"


def _order(key: str) -> tuple:
    """Top-level keys before block keys, and blocks in numeric order (2 before 10)."""
    natural = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))
    return (key.startswith(("blocks.", "encoder.layer.")), natural)
