"""The decoding fan-out: model inputs in request order, the lowest bad index wins, its own drain rate, raw pixels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from service_test_utils import png

from service.config import Settings
from service.core.decoding import Decoder
from service.core.errors import InvalidImage, InvalidInput
from service.core.features import FeatureOptions
from service.core.images import ResizeRule
from service.core.metrics import Metrics
from service.core.registry import ModelVersion


def model(tmp_path: Path) -> ModelVersion:
    return ModelVersion("m", 1, tmp_path, state="ready", resize=ResizeRule(short_side=28, multiple_of=14, min_side=14))


def test_images_come_back_at_the_model_size_in_order_and_the_rate_is_measured(tmp_path):
    decoder = Decoder(Settings(model_repo=tmp_path, decode_threads=2), Metrics())
    images = [png(np.full((56, 84, 3), i, np.uint8)) for i in range(5)]
    arrays = asyncio.run(decoder.prepare(images, model(tmp_path), FeatureOptions()))
    assert [a.shape for a in arrays] == [(28, 42, 3)] * 5 and [int(a[0, 0, 0]) for a in arrays] == list(range(5))
    assert decoder.pending == 0 and decoder.seconds_per_image > 0
    assert decoder.drain_seconds(4) == pytest.approx(4 * decoder.seconds_per_image / 2)
    decoder.shutdown()


def test_the_lowest_bad_index_fails_the_request_and_raw_pixels_are_checked(tmp_path):
    decoder = Decoder(Settings(model_repo=tmp_path), Metrics())
    good = png(np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(InvalidImage) as err:
        asyncio.run(decoder.prepare([good, b"nope", b"also not"], model(tmp_path), FeatureOptions()))
    assert err.value.index == 1
    pixels = np.zeros((28, 42, 3), np.uint8)
    (same,) = asyncio.run(decoder.prepare([pixels], model(tmp_path), FeatureOptions()))
    assert same.shape == (28, 42, 3)
    with pytest.raises(InvalidInput) as err:
        asyncio.run(decoder.prepare([pixels, np.zeros((30, 28, 3), np.uint8)], model(tmp_path), FeatureOptions()))
    assert err.value.index == 1 and "multiple of 14" in err.value.message
    assert decoder.pending == 0
    decoder.shutdown()


def test_images_are_decoded_in_runs_one_per_thread_and_the_lowest_bad_index_still_wins(tmp_path):
    decoder = Decoder(Settings(model_repo=tmp_path, decode_threads=2), Metrics())
    good = png(np.zeros((28, 28, 3), np.uint8))
    for images, bad in (([good, good, b"x", good, b"y"], 2), ([good, good, good, b"x", b"y"], 3),
                        ([good, good, good, good, b"y"], 4), ([b"x", good, good, good, b"y"], 0)):
        with pytest.raises(InvalidImage) as err:
            asyncio.run(decoder.prepare(images, model(tmp_path), FeatureOptions()))
        assert err.value.index == bad
    seen = []
    original = decoder._prepare_run
    decoder._prepare_run = lambda raws, start, *a: seen.append((start, len(raws))) or original(raws, start, *a)
    arrays = asyncio.run(decoder.prepare([good] * 5, model(tmp_path), FeatureOptions()))
    assert len(arrays) == 5 and sorted(seen) == [(0, 3), (3, 2)]
    decoder.shutdown()
