"""A model together with where it came from: what every job records in its reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .archs import ArchConfig
from .vit import DinoVisionTransformer


@dataclass
class LoadedModel:
    model: DinoVisionTransformer
    arch: ArchConfig
    source: str  # the checkpoint path, or "demo:seed=N" for the synthetic demo
    source_format: str  # "official" | "hf" | "sinder" | "demo"
    sha256: str  # of the checkpoint file (for the demo: of its serialized state dict)
    synthetic: bool = False
    # sinder.defects.directions.Directions once a job has computed them (see directions_of)
    directions: Any = field(default=None, repr=False, compare=False)

    def describe(self) -> dict:
        return {
            "arch": self.arch.name,
            "source": self.source,
            "source_format": self.source_format,
            "sha256": self.sha256,
            "interpolation": self.arch.interpolation,
            "synthetic": self.synthetic,
        }
