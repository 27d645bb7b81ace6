"""Admission alone: in-flight and byte bounds, and refusing work that cannot run before its deadline."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.backends.fake import FakeBackend
from service.config import Settings
from service.core.admission import DEADLINE_HEADROOM, Admission
from service.core.batcher import Batcher
from service.core.deadlines import Deadline
from service.core.errors import Overloaded, Unavailable
from service.core.metrics import Metrics


def make(tmp_path, draining=False, **settings) -> tuple[Admission, Metrics]:
    metrics = Metrics()
    return Admission(Settings(model_repo=tmp_path, **settings), metrics, lambda: draining), metrics


def batcher(seconds_per_image: float | None, queue_size: int = 1000) -> Batcher:
    return Batcher("m", FakeBackend().run, max_batch_size=8, max_queue_delay_s=0, queue_size=queue_size,
                   seconds_per_image=seconds_per_image)


def image() -> np.ndarray:
    return np.zeros((28, 28, 3), np.uint8)


def test_work_that_fits_the_deadline_is_admitted_and_the_rest_refused_with_the_drain_time(tmp_path):
    admission, metrics = make(tmp_path)
    b = batcher(seconds_per_image=0.1)  # a model of known speed: 10 images/s
    deadline = Deadline.after(10.5)  # 10 s for the images (0.5 s kept for the answer): room for 80 with the headroom

    async def main():
        b.submit([image() for _ in range(50)], deadline.at)  # 5 s of work queued
        with b.incoming(20):  # 2 s more being decoded
            admission.check_work(b, "m", 8, deadline)  # 7.8 s: fits
            with pytest.raises(Overloaded) as err:
                admission.check_work(b, "m", 20, deadline)  # 9 s > 8 s: refused
        return err.value

    err = asyncio.run(main())
    assert err.retry_after == 7  # the 70 images ahead drain in 7 s at the measured rate
    assert "70 images ahead" in err.message
    assert 'reason="deadline_unreachable"' in metrics.render().decode()
    assert DEADLINE_HEADROOM == 0.8


def test_a_shorter_deadline_is_refused_where_a_longer_one_is_admitted(tmp_path):
    admission, _ = make(tmp_path)
    b = batcher(seconds_per_image=0.05)

    async def main():
        b.submit([image() for _ in range(10)], Deadline.after(60).at)  # 0.5 s ahead
        admission.check_work(b, "m", 1, Deadline.after(5.0))
        with pytest.raises(Overloaded):
            admission.check_work(b, "m", 1, Deadline.after(0.5))

    asyncio.run(main())


def test_the_queue_bound_applies_before_any_rate_is_known(tmp_path):
    admission, metrics = make(tmp_path)
    b = batcher(seconds_per_image=None, queue_size=4)

    async def main():
        admission.check_work(b, "m", 4, Deadline.after(0.001))  # no rate yet: the deadline is not judged
        b.submit([image() for _ in range(4)], Deadline.after(60).at)
        with pytest.raises(Overloaded):
            admission.check_work(b, "m", 1, Deadline.after(60))

    asyncio.run(main())
    assert 'reason="queue_full"' in metrics.render().decode()


def test_requests_and_bytes_in_flight_are_bounded_and_released(tmp_path):
    admission, _ = make(tmp_path, max_inflight_requests=2, max_body_bytes=1024, max_inflight_bytes=3000)
    with admission.request() as first, admission.request():
        first.reserve(2000)
        with pytest.raises(Overloaded):
            first.reserve(1001)
        with pytest.raises(Overloaded), admission.request():
            pass
        assert admission.inflight == 2 and admission.inflight_bytes == 2000
    assert admission.inflight == 0 and admission.inflight_bytes == 0


def test_draining_refuses_with_unavailable(tmp_path):
    admission, _ = make(tmp_path, draining=True)
    with pytest.raises(Unavailable), admission.request():
        pass


def test_the_decoders_backlog_counts_too(tmp_path):
    admission, _ = make(tmp_path)
    b = batcher(seconds_per_image=0.001)  # a fast model: decoding is what limits
    deadline = Deadline.after(1.0)

    async def main():
        admission.check_work(b, "m", 1, deadline, decoding_s=0.5)
        with pytest.raises(Overloaded):
            admission.check_work(b, "m", 1, deadline, decoding_s=0.9)

    asyncio.run(main())
