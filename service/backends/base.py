"""The interface every backend implements: a batch of uint8 NHWC images in, named arrays out."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

# Execution providers that run on a GPU (readiness under SINDER_REQUIRE_GPU, I/O binding).
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "uint8", "bool"
    shape: tuple  # ints, or None / str for dynamic dimensions


class Backend(abc.ABC):
    """One loaded model. ``run`` is called from a worker thread, one batch at a time."""

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @property
    @abc.abstractmethod
    def provider(self) -> str:
        """The execution provider really running the model (e.g. CPUExecutionProvider)."""

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch ``[B, H, W, 3]`` uint8; return every output, each with leading dim B."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]
