"""Before/after at the layers where the defect lives: last, peak, first defect (and loss)."""

import copy

import pytest
import torch

from sinder.defects.directions import defect_directions
from sinder.defects.measure import measure_layers
from sinder.defects.where import compare_at_layers, layers_of_interest, peak_layer, where_summary


@pytest.fixture(scope="module")
def setup(demo_photos_dir):
    from sinder import demo
    from sinder.images import list_images, load_image

    loaded = demo.load_demo(0)
    images = [load_image(p, 224) for p in list_images(demo_photos_dir)[:6]]
    off = copy.deepcopy(loaded.model)
    with torch.no_grad():  # the planted defect units write nothing any more
        fc2 = off.blocks[demo.DEFECT_BLOCK].mlp.fc2
        fc2.weight[demo.private_channels(0).defect] = 0
    return loaded, off, images, defect_directions(loaded.model)


def test_layers_of_interest_and_peak():
    rows = [{"max_norm": m, "median_norm": 1.0} for m in (2.0, 9.0, 3.0)]
    assert peak_layer(rows) == 1
    assert layers_of_interest(rows, 1, loss_layer=0) == {"last": 2, "peak": 1, "first_defect": 1, "loss": 0}


def test_compare_at_layers_sees_the_removed_defect_where_it_lives(setup):
    from sinder import demo

    loaded, off, images, directions = setup
    before = measure_layers(loaded.model, images, directions)
    where = layers_of_interest(before["layers"], before["first_defect_layer"], loss_layer=demo.DEFECT_BLOCK)
    assert where["first_defect"] == demo.DEFECT_BLOCK
    out = compare_at_layers(loaded.model, off, directions, images, where)
    for name in ("last", "peak", "loss"):
        before_n, after_n = out[name]["before"]["high_norm_tokens"], out[name]["after"]["high_norm_tokens"]
        assert before_n > 0 and after_n <= before_n / 4, (name, before_n, after_n)  # natural outliers may stay
    assert out["loss"]["layer"] == demo.DEFECT_BLOCK and out["loss"]["reduction"]["high_norm_fraction"] >= 0.75
    summary = where_summary(before, measure_layers(off, images, directions))
    assert summary["peak"]["after"]["max_median_ratio"] < summary["peak"]["before"]["max_median_ratio"]
