"""The client's retry timing, /info limits and chunking, alone (no HTTP)."""

from __future__ import annotations

import random

import pytest

from service.client.policy import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGES, RetryPolicy, ServerLimits, chunk


def test_retry_after_is_honoured_with_jitter_above_it_and_capped():
    policy = RetryPolicy(jitter=0.25, max_wait_s=10.0)
    rng = random.Random(0)
    waits = [policy.wait_s(1, 2.0, rng) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 2.5  # never earlier than asked
    assert len({round(w, 6) for w in waits}) > 100  # jittered, so clients do not return together
    assert policy.wait_s(1, 3600.0, rng) == 10.0  # a silly Retry-After is capped


def test_backoff_without_retry_after_doubles_with_jitter_below_it_and_is_capped():
    policy = RetryPolicy(backoff_s=0.5, max_wait_s=3.0, jitter=0.5)
    rng = random.Random(1)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [policy.wait_s(attempt, None, rng) for _ in range(100)]
        assert full * 0.5 <= min(waits) and max(waits) <= full
        assert max(waits) - min(waits) > full * 0.3


@pytest.mark.parametrize("bad", [dict(attempts=0), dict(backoff_s=-1), dict(jitter=2.0)])
def test_invalid_policies_are_refused(bad):
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**bad)


def test_limits_from_info_top_level_nested_or_absent():
    assert ServerLimits.from_info({"max_images": 8, "max_body_bytes": 1000}) == ServerLimits(8, 1000, "info")
    assert ServerLimits.from_info({"limits": {"max_images": 3}}) == ServerLimits(3, DEFAULT_MAX_BODY_BYTES, "info")
    assert ServerLimits.from_info({"version": "1"}) == ServerLimits(DEFAULT_MAX_IMAGES, DEFAULT_MAX_BODY_BYTES, "defaults")
    assert ServerLimits.from_info({"max_images": True, "max_body_bytes": -5}).source == "defaults"


def test_chunks_keep_order_and_respect_the_image_count():
    blobs = [bytes([i]) * 10 for i in range(7)]
    parts = chunk(blobs, ServerLimits(3, 10**6), multipart=False)
    assert [(off, len(p)) for off, p in parts] == [(0, 3), (3, 3), (6, 1)]
    assert [b for _, p in parts for b in p] == blobs


@pytest.mark.parametrize("multipart", [False, True])
def test_chunks_respect_the_body_size_and_an_oversized_image_goes_alone(multipart):
    blobs = [b"x" * 3000, b"x" * 3000, b"x" * 50_000, b"x" * 3000]
    parts = chunk(blobs, ServerLimits(64, 10_000), multipart)
    assert [(off, len(p)) for off, p in parts] == [(0, 2), (2, 1), (3, 1)]
    for _, part in parts:
        if len(part) > 1:  # what a request carries fits the limit, base64 included
            wire = sum(len(b) + 256 if multipart else 4 * -(-len(b) // 3) for b in part)
            assert wire <= 10_000
