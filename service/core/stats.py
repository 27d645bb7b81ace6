"""Per-model running statistics of what was served (for /models/{name}), and their histogram."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.metrics import Metrics


@dataclass
class ModelStats:
    images: int = 0
    defect_fraction_sum: float = 0.0

    @property
    def mean_defect_fraction(self) -> float | None:
        return self.defect_fraction_sum / self.images if self.images else None


class Stats:
    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self._by_model: dict[str, ModelStats] = {}

    def record(self, model: str, outputs: dict[str, np.ndarray]) -> None:
        """Count one served image of ``model`` (``name:version``); only models with a defect mask are counted."""
        mask = outputs.get("defect_mask")
        if mask is None:
            return
        count = int(np.count_nonzero(mask))
        self._metrics.defect_tokens.labels(model).observe(count)
        stats = self._by_model.setdefault(model, ModelStats())
        stats.images += 1
        stats.defect_fraction_sum += count / max(1, mask.size)

    def of(self, model: str) -> ModelStats:
        return self._by_model.get(model, ModelStats())
