"""Fixtures of the repair tests (the toy model itself lives in ``toy_defect.py``)."""

import pytest
import torch

from toy_defect import toy_loaded, write_images


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return toy_loaded()


@pytest.fixture
def image_paths(tmp_path):
    return write_images(tmp_path / "images", 6)


