"""A corrupt or missing model.onnx in one folder: that model is unavailable with a clear log line
and a clear error to its callers, the others keep serving, and readiness follows the policy
(ready by default; with SINDER_REQUIRE_ALL_MODELS=true not ready, naming the model)."""

from __future__ import annotations

import base64

import httpx
import pytest
import tiny_repo
from stress_helpers import noise, png

pytestmark = pytest.mark.slow  # `make stress`; excluded from `make test`


@pytest.fixture
def broken_repo(tmp_path):
    repo = tmp_path / "repo"
    tiny_repo.write_model(repo, "good", 1)
    corrupt = tiny_repo.write_model(repo, "corrupt", 1)
    (corrupt / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf" * 10)
    missing = tiny_repo.write_model(repo, "missing", 1)
    (missing / "model.onnx").unlink()
    return repo


def _features(url: str, model: str) -> httpx.Response:
    img = base64.b64encode(png(noise(56, 56))).decode()
    return httpx.post(f"{url}/features", json={"images": [img], "model": model, "outputs": ["cls"]}, timeout=30)


def test_broken_models_fail_alone_and_readiness_stays_true_by_default(broken_repo, start_service):
    svc = start_service(broken_repo)
    assert httpx.get(f"{svc.url}/health/ready", timeout=5).status_code == 200
    assert _features(svc.url, "good").status_code == 200
    for name in ("corrupt", "missing"):
        r = _features(svc.url, name)
        assert r.status_code == 424, r.text  # broken files fail every time: not 503, which retry policies resend
        err = r.json()["error"]
        assert name in err["message"] and err["type"] == "model_failed"
    listing = {m["name"]: m for m in httpx.get(f"{svc.url}/models", timeout=5).json()["models"]}
    assert listing["good"]["state"] == "ready"
    for name in ("corrupt", "missing"):
        assert listing[name]["state"] == "failed" and listing[name]["error"]
    log = svc.log()
    for name in ("corrupt", "missing"):
        lines = [ln for ln in log.splitlines() if name in ln and "unavailable" in ln]
        assert lines, f"no log line says {name} is unavailable:\n{svc.log_tail()}"
    print("\nbroken model log lines:\n" + "\n".join(ln for ln in log.splitlines() if "unavailable" in ln))


def test_require_all_models_keeps_readiness_false(broken_repo, start_service):
    svc = start_service(broken_repo, wait_ready=False, require_all_models=True)
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{svc.url}/health/ready", timeout=5)
        body = r.json()
        if any("failed" in str(x) for x in body.get("reasons", [])):
            break
        time.sleep(0.2)
    assert r.status_code == 503
    assert any("corrupt" in str(x) for x in body["reasons"]) and any("missing" in str(x) for x in body["reasons"])
    assert httpx.get(f"{svc.url}/health/live", timeout=5).status_code == 200
    assert _features(svc.url, "good").status_code == 200  # not ready for balancers, yet the good model answers
