"""SINDER repair (Wang, Zhang, Salzmann, ECCV 2024): singular-value fine-tuning with the neighbour loss.

Names are imported on first use, so that ``sinder.repair.options`` (needed to build the CLI)
does not pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "REPORT_NAME": "pipeline",
    "run_repair": "pipeline",
    "RepairOptions": "options",
    "NeighbourLoss": "loss",
    "neighbour_loss": "loss",
    "SVDLinear": "svd",
    "apply_svd": "svd",
    "fold_svd": "svd",
    "RepairTrainer": "train",
    "resume_path_for": "train",
    "iteration_vs_forward_backward": "bench",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
