"""A v2 request whose images give outputs of different shapes is refused naming them (a 422, never a 500)."""

from __future__ import annotations

import numpy as np
import pytest

from service.api.v2.uniform import check_one_shape
from service.core.errors import InvalidInput


def _outputs(h: int, w: int) -> dict[str, np.ndarray]:
    return {"cls_token": np.zeros(8, np.float32), "patch_tokens": np.zeros((h, w, 8), np.float32),
            "defect_mask": np.zeros((h, w), bool)}


def test_images_of_one_size_pass():
    check_one_shape([_outputs(4, 6)] * 3)
    check_one_shape([])


def test_the_first_image_of_another_size_is_named_with_both_grids():
    with pytest.raises(InvalidInput) as info:
        check_one_shape([_outputs(4, 6), _outputs(4, 6), _outputs(6, 4), _outputs(2, 2)])
    assert info.value.index == 2
    assert "images 0 and 2" in info.value.message and "patch_tokens [4, 6, 8] and [6, 4, 8]" in info.value.message
