"""Repair options; defaults are the SINDER reference code's (haoqiwang/sinder ``main.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from contract.defects import THRESHOLD_STD

from ..direction_modes import DIRECTION_MODES
from ..errors import SinderError

# Kept here, free of torch, so that building the CLI parser stays fast.
TEMPERATURE = 0.1  # reference code: softness of the suppression of defect-aligned neighbours
KERNELS = (3, 5)  # neighbourhoods the reference code has Gaussians for


@dataclass(frozen=True)
class RepairOptions:
    lr: float = 0.005
    momentum: float = 0.9
    mask_threshold: float = THRESHOLD_STD  # reference `mask_thr`: defective when |cos| > mean + 4·std
    kernel: int = 3  # neighbourhood of the neighbour loss (3 or 5)
    temperature: float = TEMPERATURE  # suppression of defect-aligned neighbours (hard-coded 0.1 in the reference)
    limit_layers: int = 10  # only this many blocks, ending at the loss layer, get gradients
    skip_less_than: int = 3  # a layer with fewer defective tokens does not count as "the first defective layer"
    stop_fraction: float = 0.75  # stop once this share of the recent window had no defect
    window: int = 1000  # the reference's history length, initially all "defective"
    resolution: int = 518  # square training crop (shorter side resized, then centre-cropped)
    max_iterations: int = 30000  # reference `max_iter`
    max_epochs: int | None = None  # optional bound on passes over the training images
    seed: int = 0  # order of the training images
    held_out_fraction: float = 0.25  # share of the images kept out of training to measure the result
    measure_resolution: int | None = None  # resolution of the held-out measurement (default: `resolution`)
    direction: str = "auto"  # defect directions: predicted | observed | auto (sinder.defects.observed)
    save_every: int = 50  # iterations between resume-file writes

    # Options that change what training computes: a resume file only continues a run that agrees on them.
    TRAINING_KEYS = ("lr", "momentum", "mask_threshold", "kernel", "temperature", "limit_layers",
                     "skip_less_than", "stop_fraction", "window", "resolution", "seed", "direction")

    def __post_init__(self) -> None:
        problems = []
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if not self.mask_threshold > 0:
            problems.append(f"mask threshold must be > 0, got {self.mask_threshold}")
        if self.kernel not in KERNELS:
            problems.append(f"kernel must be one of {KERNELS}, got {self.kernel}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature}")
        if self.limit_layers < 1:
            problems.append(f"limit layers must be >= 1, got {self.limit_layers}")
        if self.skip_less_than < 1:
            problems.append(f"skip-less-than must be >= 1, got {self.skip_less_than}")
        if not 0 < self.stop_fraction <= 1:
            problems.append(f"stop fraction must be in (0, 1], got {self.stop_fraction}")
        if self.window < 1:
            problems.append(f"window must be >= 1, got {self.window}")
        for name in ("resolution", "measure_resolution"):
            value = getattr(self, name)
            if value is not None and value < 14:
                problems.append(f"{name.replace('_', ' ')} must be at least one patch (14 px), got {value}")
        if self.max_iterations < 0:
            problems.append(f"max iterations must be >= 0, got {self.max_iterations}")
        if self.max_epochs is not None and self.max_epochs < 1:
            problems.append(f"max epochs must be >= 1, got {self.max_epochs}")
        if not 0 < self.held_out_fraction < 1:
            problems.append(f"held-out fraction must be in (0, 1), got {self.held_out_fraction}")
        if self.save_every < 1:
            problems.append(f"save-every must be >= 1, got {self.save_every}")
        if self.direction not in DIRECTION_MODES:
            problems.append(f"direction must be one of {', '.join(DIRECTION_MODES)}, got {self.direction!r}")
        if problems:
            raise SinderError("invalid repair options: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    def training_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.TRAINING_KEYS}
