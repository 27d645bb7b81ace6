"""The pipeline's own rules: a request that needs one tensor for all its images is refused before inference
when they come to different input sizes."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.errors import InvalidInput
from service.core.pipeline import _check_one_size


def test_images_of_one_input_size_pass_and_the_first_other_size_is_named():
    same = [np.zeros((28, 42, 3), np.uint8)] * 3
    _check_one_size(same)
    with pytest.raises(InvalidInput) as info:
        _check_one_size(same[:2] + [np.zeros((42, 28, 3), np.uint8), np.zeros((14, 14, 3), np.uint8)])
    assert info.value.index == 2
    assert "images 0 and 2" in info.value.message and "28x42 and 42x28" in info.value.message
