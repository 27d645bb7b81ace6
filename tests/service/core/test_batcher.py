"""The batcher alone, with the fake backend: batching, shapes, overload, deadlines, cancellation, failures."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from service_test_utils import until

from service.backends.fake import FakeBackend
from service.core.batcher import Batcher
from service.core.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from service.core.metrics import Metrics


def image(marker: int, h: int = 28, w: int = 28) -> np.ndarray:
    """An image whose top-left red value identifies it in the backend's record."""
    array = np.full((h, w, 3), 100, np.uint8)
    array[0, 0, 0] = marker
    return array


def run(coro):
    return asyncio.run(coro)


def far() -> float:
    return time.monotonic() + 60


def test_batches_fill_up_to_max_size_and_results_go_to_their_own_image():
    backend = FakeBackend()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=4, max_queue_delay_s=0.05, queue_size=64)
        batcher.start()
        futures = batcher.submit([image(i) for i in range(10)], far())
        results = await asyncio.gather(*futures)
        await batcher.close(1)
        return results

    results = run(main())
    assert sorted(b[0] for b in backend.batches) == [2, 4, 4]
    for i, res in enumerate(results):
        # The fake's first channel of each token is the pooled red value / 255: it carries the marker.
        expected = backend.run(image(i)[None])["patch_tokens"][0]
        np.testing.assert_allclose(res.outputs["patch_tokens"], expected)
        assert res.batch_size in (2, 4)
        assert res.queue_s >= 0 and res.inference_s >= 0


def test_a_lone_image_waits_at_most_about_the_queue_delay():
    backend = FakeBackend()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=32, max_queue_delay_s=0.05, queue_size=64)
        batcher.start()
        start = time.monotonic()
        (res,) = await asyncio.gather(*batcher.submit([image(1)], far()))
        elapsed = time.monotonic() - start
        await batcher.close(1)
        return res, elapsed

    res, elapsed = run(main())
    assert res.batch_size == 1
    assert 0.04 <= res.queue_s < 1.0
    assert elapsed < 2.0


def test_images_of_different_shapes_never_share_a_batch():
    backend = FakeBackend()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=8, max_queue_delay_s=0.02, queue_size=64)
        batcher.start()
        shapes = [(28, 28), (28, 42), (28, 28), (42, 28), (28, 42)]
        results = await asyncio.gather(*batcher.submit([image(i, *s) for i, s in enumerate(shapes)], far()))
        await batcher.close(1)
        return shapes, results

    shapes, results = run(main())
    assert sorted(backend.batches) == sorted([(2, 28, 28, 3), (2, 28, 42, 3), (1, 42, 28, 3)])
    for (h, w), res in zip(shapes, results):
        assert res.outputs["patch_tokens"].shape[:2] == (h // 14, w // 14)


def test_full_queue_is_refused_at_once_all_or_nothing_and_recovers():
    backend = FakeBackend(delay_s=0.2)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=2, max_queue_delay_s=0.0, queue_size=4)
        batcher.start()
        first = batcher.submit([image(i) for i in range(4)], far())
        start = time.monotonic()
        with pytest.raises(Overloaded) as err:
            batcher.submit([image(9)], far())
        refused_in = time.monotonic() - start
        depth_after_refusal = batcher.depth
        await asyncio.gather(*first)
        again = await asyncio.gather(*batcher.submit([image(5)], far()))
        await batcher.close(1)
        return err.value, refused_in, depth_after_refusal, again

    err, refused_in, depth, again = run(main())
    assert refused_in < 0.05
    assert err.retry_after >= 1 and err.type == "overloaded"
    assert depth <= 4
    assert len(again) == 1
    assert 9 not in [int(p) for p in backend.seen_pixels]


def test_items_past_their_deadline_are_dropped_before_running():
    backend = FakeBackend()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=4, max_queue_delay_s=0.05, queue_size=16)
        batcher.start()
        late = batcher.submit([image(7)], time.monotonic() + 0.01)
        ok = batcher.submit([image(8)], far())
        results = await asyncio.gather(*late, *ok, return_exceptions=True)
        await batcher.close(1)
        return results

    late, ok = run(main())
    assert isinstance(late, DeadlineExceeded)
    assert not isinstance(ok, Exception)
    assert backend.seen_pixels == [8]


def test_cancelled_items_free_their_slots_and_never_run():
    backend = FakeBackend(delay_s=0.2)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=1, max_queue_delay_s=0.0, queue_size=3)
        batcher.start()
        busy = batcher.submit([image(1)], far())
        await until(lambda: backend.seen_pixels)  # image 1 is running now
        gone = batcher.submit([image(2), image(3)], far())
        for fut in gone:
            fut.cancel()
        await asyncio.sleep(0)
        depth = batcher.depth
        kept = batcher.submit([image(4), image(5), image(6)], far())  # fits only because 2 and 3 left
        await asyncio.gather(*busy, *kept)
        await batcher.close(1)
        return depth

    depth = run(main())
    assert depth == 0
    assert backend.seen_pixels == [1, 4, 5, 6]


def test_a_failing_batch_fails_each_of_its_images_and_the_worker_keeps_serving():
    def fail(batch):
        if (batch[:, 0, 0, 0] == 66).any():
            raise RuntimeError("boom")

    backend = FakeBackend(fail=fail)
    metrics = Metrics()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=4, max_queue_delay_s=0.05, queue_size=16, metrics=metrics)
        batcher.start()
        doomed = await asyncio.gather(*batcher.submit([image(1), image(66), image(2)], far()), return_exceptions=True)
        fine = await asyncio.gather(*batcher.submit([image(3), image(4)], far()))
        await batcher.close(1)
        return doomed, fine

    doomed, fine = run(main())
    assert all(isinstance(e, InferenceFailed) for e in doomed)
    assert "boom" in str(doomed[0]) and "m" in str(doomed[0])
    assert len(fine) == 2
    assert metrics.batch_failures.labels("m")._value.get() == 1


def test_inference_runs_off_the_event_loop():
    backend = FakeBackend(delay_s=0.3)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=1, max_queue_delay_s=0.0, queue_size=4)
        batcher.start()
        futures = batcher.submit([image(1)], far())
        await until(lambda: backend.seen_pixels)  # inference has started
        start = time.monotonic()
        await asyncio.sleep(0.01)  # would wait for the whole batch if inference blocked the loop
        tick = time.monotonic() - start
        await asyncio.gather(*futures)
        await batcher.close(1)
        return tick

    assert run(main()) < 0.15


def test_close_finishes_queued_work_then_refuses_new_work():
    backend = FakeBackend(delay_s=0.05)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=2, max_queue_delay_s=1.0, queue_size=16)
        batcher.start()
        futures = batcher.submit([image(i) for i in range(5)], far())
        await batcher.close(5)
        with pytest.raises(Unavailable):
            batcher.submit([image(9)], far())
        return [f.result() for f in futures]

    results = run(main())
    assert len(results) == 5  # all finished, without waiting the 1 s queue delay for fuller batches
    assert backend.seen_pixels == [0, 1, 2, 3, 4]


def test_close_past_its_grace_fails_what_is_left_instead_of_hanging():
    backend = FakeBackend(delay_s=0.5)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=1, max_queue_delay_s=0.0, queue_size=16)
        batcher.start()
        futures = batcher.submit([image(i) for i in range(4)], far())
        start = time.monotonic()
        await batcher.close(0.1)
        took = time.monotonic() - start
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        return took, outcomes

    took, outcomes = run(main())
    assert took < 0.4
    assert all(isinstance(o, Unavailable) for o in outcomes)


def test_with_wait_only_for_incoming_a_lone_image_runs_at_once_and_waits_while_others_decode():
    backend = FakeBackend()

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=8, max_queue_delay_s=0.5, queue_size=64,
                          wait_only_for_incoming=True)
        batcher.start()
        start = time.monotonic()
        await asyncio.gather(*batcher.submit([image(1)], far()))
        alone = time.monotonic() - start

        # Another request is being decoded: the first image waits for it and they share a batch.
        with batcher.incoming():
            first = batcher.submit([image(2)], far())
            await asyncio.sleep(0.05)
            assert not first[0].done()
            second = batcher.submit([image(3)], far())
        results = await asyncio.gather(*first, *second)
        await batcher.close(1)
        return alone, results

    alone, results = run(main())
    assert alone < 0.25  # far below the 0.5 s delay
    assert [b[0] for b in backend.batches] == [1, 2]
    assert all(r.batch_size == 2 for r in results)


def test_the_drain_rate_is_measured_and_the_backlog_counts_incoming_images():
    backend = FakeBackend(delay_s=0.02)

    async def main():
        batcher = Batcher("m", backend.run, max_batch_size=4, max_queue_delay_s=0, queue_size=64)
        batcher.start()
        before = batcher.drain_seconds(1)
        with batcher.incoming(3):
            incoming = batcher.backlog
        await asyncio.gather(*batcher.submit([image(i) for i in range(4)], far()))
        await batcher.close(1)
        return before, incoming, batcher.seconds_per_image, batcher.drain_seconds(10)

    before, incoming, per_image, ten = run(main())
    assert before is None and incoming == 3
    assert per_image is not None and per_image > 0
    assert ten == pytest.approx(10 * per_image)
