"""A backend for tests of the core: deterministic outputs, optional delay and injected failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from contract import defects
from service.backends.base import Backend, TensorSpec


class FakeBackend(Backend):
    """Outputs follow the model-repository contract, computed cheaply from the pixels.

    ``delay_s`` sleeps per batch; ``fail`` (a callable on the batch) raising makes that batch fail.
    Every batch shape run is recorded in ``batches``.
    """

    def __init__(self, patch_size: int = 14, dim: int = 4, *, delay_s: float = 0.0,
                 fail: Callable[[np.ndarray], None] | None = None, provider: str = "CPUExecutionProvider"):
        self.patch_size = patch_size
        self.dim = dim
        self.delay_s = delay_s
        self.fail = fail
        self._provider = provider
        self.batches: list[tuple[int, ...]] = []
        self.seen_pixels: list[np.ndarray] = []
        self._lock = threading.Lock()

    @property
    def inputs(self):
        return [TensorSpec("images", "uint8", (None, None, None, 3))]

    @property
    def outputs(self):
        return [
            TensorSpec("cls_token", "float32", (None, self.dim)),
            TensorSpec("patch_tokens", "float32", (None, None, None, self.dim)),
            TensorSpec("token_norms", "float32", (None, None, None)),
            TensorSpec("defect_alignment", "float32", (None, None, None)),
            TensorSpec("defect_mask", "bool", (None, None, None)),
        ]

    @property
    def provider(self) -> str:
        return self._provider

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.batches.append(tuple(images.shape))
            self.seen_pixels.extend(images[:, 0, 0, 0].tolist())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None:
            self.fail(images)
        b, h, w, _ = images.shape
        p = self.patch_size
        pooled = images.reshape(b, h // p, p, w // p, p, 3).mean(axis=(2, 4)).astype(np.float32) / 255.0
        tokens = np.concatenate([pooled, np.ones((b, h // p, w // p, self.dim - 3), np.float32)], axis=-1)
        norms = np.linalg.norm(tokens, axis=-1)
        align = np.abs(tokens[..., 0]) / norms
        return {
            "cls_token": tokens.mean(axis=(1, 2)),
            "patch_tokens": tokens,
            "token_norms": norms,
            "defect_alignment": align,
            "defect_mask": np.stack([defects.defect_mask(a) for a in align]),  # the contract's rule, per image
        }
