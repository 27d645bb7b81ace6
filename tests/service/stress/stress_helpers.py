"""Small helpers of the slow tests (a unique module name: several conftest.py files exist)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()
