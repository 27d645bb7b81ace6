"""A model together with where it came from: what every job records in its reports."""

from __future__ import annotations

from dataclasses import dataclass

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

    def describe(self) -> dict:
        return {
            "arch": self.arch.name,
            "source": self.source,
            "source_format": self.source_format,
            "sha256": self.sha256,
            "interpolation": self.arch.interpolation,
            "synthetic": self.synthetic,
        }
