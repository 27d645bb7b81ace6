"""GET /info: the service's version, each model's sizes and bounds, and the request limits."""

from __future__ import annotations

from service import __version__


def test_info_reports_models_and_limits(make_client):
    client = make_client(max_images=5, max_body_bytes=3_000_000, max_batch_size=4, request_timeout_s=7.5)
    response = client.get("/info")
    assert response.status_code == 200
    info = response.json()
    assert info["version"] == __version__
    assert (info["max_images"], info["max_body_bytes"], info["max_batch_size"], info["request_timeout_s"]) == (5, 3_000_000, 4, 7.5)
    assert info["max_image_pixels"] == 40_000_000
    assert info["default_model"] == "tiny_sinder"
    assert "CPUExecutionProvider" in info["providers_available"] and info["providers_requested"] == ["auto"]
    models = {m["id"]: m for m in info["models"]}
    assert set(models) == {"tiny:1", "tiny_sinder:1", "tiny_reg:1"}
    tiny = models["tiny:1"]
    assert (tiny["name"], tiny["version"], tiny["state"], tiny["default"]) == ("tiny", 1, "ready", False)
    assert (tiny["dims"], tiny["patch_size"], tiny["register_tokens"]) == (8, 14, 0)
    assert tiny["resolution"] == {"short_side": 56, "multiple_of": 14, "min_side": 28, "max_side": 224, "max_pixels": 224 * 224}
    assert tiny["max_batch_size"] == 4  # the setting caps the model's own 16
    assert tiny["provider"] == "CPUExecutionProvider" and "patch_tokens" in tiny["outputs"]
    assert models["tiny_reg:1"]["register_tokens"] == 2 and models["tiny_sinder:1"]["default"]


def test_info_needs_the_api_key_when_one_is_set(make_client):
    client = make_client(api_key="k3y-for-info")
    assert client.get("/info").status_code == 401
    assert client.get("/info", headers={"Authorization": "Bearer k3y-for-info"}).status_code == 200
