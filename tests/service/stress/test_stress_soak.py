"""Soak: after warm-up, resident memory grows by less than 10% over a few thousand requests."""

from __future__ import annotations

import base64
import json

import pytest
import tiny_repo
from bench.loadgen import run_load_sync
from stress_helpers import noise, png

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`

WARMUP = 400
SOAK = 3000


def test_memory_is_flat_over_thousands_of_requests(tmp_path, start_service):
    repo = tiny_repo.write_repo(tmp_path / "repo")
    svc = start_service(repo, max_batch_size=8, max_queue_delay_ms=2, log_level="warning")
    # varied sizes and outputs, so that caches keyed by shape and every encoder are exercised
    bodies = []
    for i, (h, w) in enumerate([(56, 56), (70, 112), (98, 84)]):
        bodies.append(json.dumps({"images": [base64.b64encode(png(noise(h, w, seed=i))).decode()] * 2,
                                  "outputs": ["cls", "pooled", "patch_tokens", "diagnostics"],
                                  "encoding": "json" if i == 1 else "base64", "diagnostics_maps": i == 2}).encode())
    url = f"{svc.url}/features"
    for body in bodies:
        res = run_load_sync(url, body, concurrency=4, max_requests=WARMUP // len(bodies), max_seconds=60)
        assert res.statuses == {200: WARMUP // len(bodies)}, res.as_dict()
    before = svc.rss_bytes()
    total = {}
    for body in bodies * 2:
        res = run_load_sync(url, body, concurrency=8, max_requests=SOAK // (2 * len(bodies)), max_seconds=120)
        for k, v in res.statuses.items():
            total[k] = total.get(k, 0) + v
        assert not res.errors, res.as_dict()
    after = svc.rss_bytes()
    growth = (after - before) / before
    print(f"\nsoak: {sum(total.values())} requests {total}; RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1%})")
    assert total.get(200, 0) >= 0.99 * SOAK
    assert growth < 0.10
