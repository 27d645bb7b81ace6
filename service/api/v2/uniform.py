"""One v2 output is one ``[B, ...]`` tensor, so every image of a request must give outputs of one shape.

``BYTES`` files are resized as ``POST /features`` resizes them (short side to the model's size,
aspect kept), so a portrait photo beside a landscape one, or two photos of different aspect
ratios, give different patch grids: no tensor holds both. Such a request is refused (422) naming
the two images and their grids, before any output is gathered; ``/features`` serves it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.core.errors import InvalidInput


def check_one_shape(per_image: Sequence[dict[str, np.ndarray]]) -> None:
    """InvalidInput naming the first image whose outputs differ in shape from image 0's."""
    if not per_image:
        return
    first = {name: np.shape(value) for name, value in per_image[0].items()}
    for i, outputs in enumerate(per_image[1:], start=1):
        for name, value in outputs.items():
            if np.shape(value) != first.get(name):
                raise InvalidInput(
                    f"images 0 and {i} give outputs of different shapes ({name} {list(first.get(name, ()))} and "
                    f"{list(np.shape(value))}): a v2 output is one [B, ...] tensor, so the images of one request must "
                    "be resized to one input size (the same aspect ratio); send them in separate requests, as UINT8 "
                    "pixels of one size, or to POST /features", index=i)
