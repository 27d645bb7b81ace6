"""Reading a model repository: what is a model, versions, manifests, and broken models."""

from __future__ import annotations

import json
import logging

import pytest
from service_test_utils import b64, noise, png

import tiny_repo
from service.core.registry import discover, parse_manifest, read_max_batch_size, ManifestError


def test_discover_finds_models_and_versions_and_skips_other_folders(tmp_path):
    tiny_repo.write_model(tmp_path, "a", 1)
    tiny_repo.write_model(tmp_path, "a", 3)
    tiny_repo.write_model(tmp_path, "b", 2)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "x.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "a" / "01").mkdir()  # not a version: leading zero
    (tmp_path / "a" / "tmp").mkdir()
    found = [(m.name, m.version) for m in discover(tmp_path)]
    assert found == [("a", 1), ("a", 3), ("b", 2)]
    assert [(m.name, m.version) for m in discover(tmp_path, policy="latest")] == [("a", 3), ("b", 2)]
    assert [(m.name, m.version) for m in discover(tmp_path, names=["b"])] == [("b", 2)]


def test_a_configured_model_missing_from_the_repo_is_listed_failed(tmp_path):
    tiny_repo.write_model(tmp_path, "a", 1)
    found = discover(tmp_path, names=["a", "ghost"])
    ghost = [m for m in found if m.name == "ghost"][0]
    assert ghost.state == "failed" and "ghost" in ghost.error


def test_a_bad_manifest_names_the_file_and_the_field(tmp_path):
    folder = tiny_repo.write_model(tmp_path, "a", 1)
    path = folder / "manifest.json"
    good = json.loads(path.read_text())
    assert parse_manifest(path).architecture.patch_size == 14
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(path)
    cases = [
        (lambda m: m["architecture"].pop("patch_size"), "architecture.patch_size: Field required"),
        (lambda m: m["defect"].update(threshold_std=-1), "defect.threshold_std"),
        (lambda m: m["preprocessing"]["resize"].update(multiple_of=10), "multiple_of 10 is not a multiple"),
        (lambda m: m["defect"].update(direction=[1.0]), "defect.direction has 1 values"),
        (lambda m: m.update(colour="red"), "colour: Extra inputs are not permitted"),
    ]
    for damage, message in cases:
        broken = json.loads(json.dumps(good))
        damage(broken)
        path.write_text(json.dumps(broken))
        with pytest.raises(ManifestError, match=message) as info:
            parse_manifest(path)
        assert str(path) in str(info.value)
    with pytest.raises(ManifestError, match="missing"):
        parse_manifest(tmp_path / "nope.json")


def test_config_pbtxt_max_batch_size_is_read(tmp_path):
    folder = tiny_repo.write_model(tmp_path, "a", 1, max_batch=7)
    assert read_max_batch_size(folder.parent / "config.pbtxt") == 7


@pytest.mark.parametrize("damage", ["corrupt_onnx", "missing_onnx", "bad_manifest", "no_version"])
def test_a_broken_model_is_unavailable_while_the_others_serve(make_client, tmp_path, caplog, damage):
    tiny_repo.write_model(tmp_path, "good", 1)
    folder = tiny_repo.write_model(tmp_path, "broken", 1)
    if damage == "corrupt_onnx":
        (folder / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    elif damage == "missing_onnx":
        (folder / "model.onnx").unlink()
    elif damage == "bad_manifest":
        (folder / "manifest.json").write_text("{")
    else:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    with caplog.at_level(logging.ERROR, logger="service"):
        client = make_client(repo=tmp_path)
    lines = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert lines and "unavailable" in lines[0]

    listed = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert listed["broken"]["state"] == "failed" and listed["broken"]["error"]
    assert listed["good"]["state"] == "ready"

    body = {"images": [b64(png(noise(56, 56)))], "outputs": ["cls"]}
    refused = client.post("/features", json={**body, "model": "broken"})
    assert refused.status_code == 424  # broken files fail again on every try: not 503
    assert refused.json()["error"]["type"] == "model_failed"
    assert "broken" in refused.json()["error"]["message"]
    assert client.post("/features", json={**body, "model": "good"}).status_code == 200
    assert client.post("/features", json=body).json()["model"] == "good"  # default skips the broken one

    ready = client.get("/health/ready")
    assert ready.status_code == 200  # documented policy: ready when every loadable model is warm


def test_require_all_models_makes_a_broken_model_block_readiness(make_client, tmp_path):
    tiny_repo.write_model(tmp_path, "good", 1)
    folder = tiny_repo.write_model(tmp_path, "broken", 1)
    (folder / "model.onnx").unlink()
    client = make_client(repo=tmp_path, require_all_models=True)
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert any("broken" in r for r in ready.json()["reasons"])


def test_an_empty_repository_is_never_ready(make_client, tmp_path):
    client = make_client(repo=tmp_path)
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["reasons"] == ["no model could be loaded"]
    response = client.post("/features", json={"images": [b64(png(noise(56, 56)))]})
    assert response.status_code == 503


def test_variants_are_linked_by_their_manifests_not_by_their_names(tmp_path):
    from contract.manifest import Variant
    from service.core.registry import ModelRegistry

    tiny_repo.write_model(tmp_path, "a", 1)
    tiny_repo.write_model(tmp_path, "a_sinder", 1)  # the old name suffix without a link: not a pair
    tiny_repo.write_model(tmp_path, "cleaned", 1, variant=Variant(kind="sinder", of="a"))
    tiny_repo.write_model(tmp_path, "a_ttr", 1, variant=Variant(kind="ttr", of="a"))
    tiny_repo.write_model(tmp_path, "cleaned_fp16", 1, fp16=True, variant=Variant(kind="sinder", of="a"))
    registry = ModelRegistry(tmp_path, lambda path: None, max_batch_size=1, max_queue_delay_s=0.0, queue_size=1)
    for entry in registry.versions:  # as loading leaves them, without backends
        entry.manifest, entry.state = parse_manifest(entry.path / "manifest.json"), "ready"
    by = {e.name: e for e in registry.versions}

    def family(name):
        return [e.name for e in registry.family(by[name])]

    # the original, then SINDER, then test-time registers; of each kind the copy in the asked model's precision
    assert family("a") == family("cleaned") == family("a_ttr") == ["a", "cleaned", "a_ttr"]
    assert family("cleaned_fp16") == ["a", "cleaned_fp16", "a_ttr"]
    assert family("a_sinder") == ["a_sinder"]
