"""Prometheus metrics: one sinder_ family with explicit buckets, fed by real requests, beside the standard collectors."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from service_test_utils import b64, grey_with_patch, png

PROMTOOL = shutil.which("promtool")
STANDARD_FAMILIES = ("process_", "python_info", "python_gc_")


def test_metrics_after_traffic(make_client):
    client = make_client(models=["tiny"])
    image = b64(png(grey_with_patch()))
    assert client.post("/features", json={"images": [image] * 3, "outputs": ["diagnostics"], "resize": "native"}).status_code == 200
    assert client.post("/features", json={"images": ["@@@"]}).status_code == 400
    assert client.post("/features", json={"images": [image], "model": "nope"}).status_code == 404
    text = client.get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert all(n.startswith(("sinder_", *STANDARD_FAMILIES)) for n in names), names
    for standard in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info",
                     "python_gc_collections_total"):
        assert standard in names, standard
    expected = [
        'sinder_http_requests_total{method="POST",route="/features",status="200"} 1.0',
        'sinder_http_requests_total{method="POST",route="/features",status="400"} 1.0',
        'sinder_http_requests_total{method="POST",route="/features",status="404"} 1.0',
    ]
    for line in expected:
        assert line in text, line
    assert 'sinder_rejections_total{reason="bad_request"} 1.0' in text
    assert 'sinder_batch_size_bucket{le="4.0",model="tiny:1"}' in text
    assert 'sinder_queue_duration_seconds_bucket{le="0.005",model="tiny:1"}' in text
    assert 'sinder_inference_duration_seconds_count{model="tiny:1"}' in text
    assert 'sinder_defect_tokens_sum{model="tiny:1"} 3.0' in text  # one planted defect per image
    assert 'sinder_model_info{model="tiny",provider="CPUExecutionProvider",state="ready",version="1"} 1.0' in text
    assert 'sinder_queue_depth{model="tiny:1"} 0.0' in text
    assert "sinder_ready 1.0" in text
    images = [line for line in text.splitlines() if line.startswith('sinder_images_total{model="tiny:1"}')]
    assert images == ['sinder_images_total{model="tiny:1"} 3.0']  # warm-up runs outside the batcher
    unmatched = client.get("/no/such/path")
    assert unmatched.status_code == 404
    assert 'route="unmatched"' in client.get("/metrics").text


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found: install Debian's `prometheus` package (.ci/run does)")
def test_promtool_check_metrics_passes(make_client):
    client = make_client(models=["tiny"])
    image = b64(png(grey_with_patch()))
    assert client.post("/features", json={"images": [image], "resize": "native"}).status_code == 200
    assert client.post("/features", json={"images": ["@@@"]}).status_code == 400
    body = client.get("/metrics").content
    assert b"sinder_http_requests_total" in body and b"process_cpu_seconds_total" in body
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    # Exit 1: not parseable; 3: lint problems (names, suffixes, help); both are printed.
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (out.stdout + out.stderr).decode()


def test_the_ready_gauge_is_computed_when_scraped_not_when_readiness_is_asked(make_client):
    client = make_client(models=["tiny"])
    assert "sinder_ready 1.0" in client.get("/metrics").text
    client.app.state.service.begin_draining()  # no /health/ready call in between
    assert "sinder_ready 0.0" in client.get("/metrics").text
