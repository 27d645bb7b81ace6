import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # CI has 2 cores shared between jobs; these tests are tiny, one thread is enough.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
