"""Fixtures shared by every test of the offline tool."""

import pytest
import torch

from sinder.images import demo_images_dir


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # CI has 2 cores shared between jobs; these models are small, one thread is enough.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_photos_dir(tmp_path_factory):
    """The photos bundled with scikit-image, copied once per test session."""
    return demo_images_dir(tmp_path_factory.mktemp("demo_photos") / "demo")
