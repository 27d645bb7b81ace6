"""Liveness, readiness (loading, require_gpu, draining) and the /models routes."""

from __future__ import annotations

import threading

from service_test_utils import b64, grey_with_patch, png

from service.backends.fake import FakeBackend


def test_live_and_ready(client):
    assert client.get("/health/live").json() == {"status": "alive", "reasons": []}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "reasons": [], "models": {"tiny:1": "ready", "tiny_reg:1": "ready", "tiny_sinder:1": "ready"}}


def test_not_ready_while_models_load_but_alive(make_client):
    gate = threading.Event()

    def slow_factory(path):
        gate.wait(10)
        return FakeBackend()

    client = make_client(backend_factory=slow_factory, wait=False)
    try:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert any(r.startswith("loading") for r in ready.json()["reasons"])
        refused = client.post("/features", json={"images": [b64(png(grey_with_patch()))]})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    finally:
        gate.set()


def test_require_gpu_keeps_readiness_false_on_the_cpu_provider(make_client):
    client = make_client(require_gpu=True)
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert any("require_gpu" in r and "CPUExecutionProvider" in r for r in ready.json()["reasons"])


def test_require_gpu_is_satisfied_by_a_gpu_provider(make_client):
    client = make_client(require_gpu=True, backend_factory=lambda p: FakeBackend(provider="CUDAExecutionProvider"))
    assert client.get("/health/ready").status_code == 200


def test_models_list_states_providers_and_the_default(client):
    body = client.get("/models").json()
    assert body["default_model"] == "tiny_sinder"
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == {"tiny", "tiny_sinder", "tiny_reg"}  # tiny/reports/ is not a version
    assert all(m["provider"] == "CPUExecutionProvider" and m["state"] == "ready" for m in models.values())
    assert models["tiny_sinder"]["repaired"] is True and models["tiny"]["repaired"] is False
    assert models["tiny_sinder"]["default"] is True


def test_model_detail_has_manifest_summary_defect_rule_stats_and_repair(client):
    client.post("/features", json={"images": [b64(png(grey_with_patch()))] * 2, "model": "tiny_sinder",
                                   "outputs": ["diagnostics"], "resize": "native"})
    detail = client.get("/models/tiny_sinder").json()
    assert detail["provider"] == "CPUExecutionProvider"
    assert detail["architecture"]["patch_size"] == 14
    assert "direction" not in detail["defect"] and detail["defect"]["direction_dim"] == 8
    assert detail["defect"]["threshold_std"] == 4.0
    assert detail["repair"]["iterations"] == 10
    assert detail["defect_stats"]["images"] >= 2
    assert 0 < detail["defect_stats"]["mean_defect_fraction"] <= 1
    assert {o["name"] for o in detail["outputs"]} >= {"cls_token", "patch_tokens", "defect_mask"}
    assert detail["max_batch_size"] == 16  # the model's own limit (config.pbtxt) below the service's 32
    assert [v["version"] for v in detail["versions"]] == [1]
    assert client.get("/models/tiny_sinder:1").json()["version"] == 1


def test_unknown_model_detail_is_404_in_the_envelope(client):
    for path in ("/models/nope", "/models/tiny:9"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["type"] == "model_not_found"


def test_liveness_fails_if_a_batch_worker_stopped(make_client):
    client = make_client(models=["tiny"])
    entry = client.app.state.service.registry.resolve("tiny")
    client.portal.call(_cancel_worker, entry.batcher)
    live = client.get("/health/live")
    assert live.status_code == 503 and live.json()["status"] == "dead"
    assert client.get("/health/ready").status_code == 503


async def _cancel_worker(batcher):
    import asyncio

    batcher._worker.cancel()
    await asyncio.sleep(0.01)


def test_docs_and_openapi_are_served(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert client.get("/openapi.json").json()["paths"]["/features"]["post"]
