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


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run faster on one thread than fighting over a shared 2-core CI machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
