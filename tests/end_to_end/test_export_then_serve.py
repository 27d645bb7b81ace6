"""The test that joins the two halves: a tiny DINOv2 with a planted singular defect, exported
with ``sinder export``, served by the service from that folder on the real onnxruntime
backend, and ``POST /features`` with a photo.

- patch tokens equal the PyTorch model's on the same preprocessed pixels (max abs <= 1e-4);
- the diagnostics equal the contract's rule (``contract/defects.py``) applied in numpy to the
  PyTorch model's last-block tokens, with the manifest's direction;
- the photo through the tool's preprocessing (``sinder.images``, what ``sinder analyze`` and
  the repair's evaluation use) reaches the graph as the same pixels as through the service.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from contract import defects, layout
from contract.manifest import read_manifest
from sinder.checkpoints import load_model, save_official
from sinder.cli import main as sinder_main
from sinder.images import load_image, load_pixels

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "sinder" / "repair"), str(TESTS / "service")]
from service_test_utils import wait_loaded  # noqa: E402
from toy_defect import toy_loaded  # noqa: E402


def _array(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["data"]), dtype=entry["dtype"]).reshape(entry["shape"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model_repo, checkpoint, photo path): the toy exported by the CLI, a JPEG photo turned by EXIF.

    The toy (tests/sinder/repair/toy_defect.py) writes a large value into one private channel
    at a few positions: the diagnostics have defect tokens to agree on."""
    tmp = tmp_path_factory.mktemp("e2e")
    checkpoint = save_official(toy_loaded().model, tmp / "toy.pth")
    repo = tmp / "model_repo"
    assert sinder_main(["export", "--checkpoint", str(checkpoint), "--name", "toy", "--model-repo", str(repo)]) == 0
    from skimage import data

    photo = tmp / "chelsea.jpg"
    exif = Image.Exif()
    exif[0x0112] = 3  # stored upside down, shown upright: the service and the tool must both turn it
    Image.fromarray(np.ascontiguousarray(data.chelsea()[::-1, ::-1])).save(photo, quality=92, exif=exif)
    return repo, checkpoint, photo


@pytest.fixture(scope="module")
def served(exported):
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from service.config import Settings

    repo, _, photo = exported
    app = create_app(Settings(model_repo=repo))
    with TestClient(app) as client:
        wait_loaded(app)
        response = client.post("/features", files=[("images", ("chelsea.jpg", photo.read_bytes(), "image/jpeg"))],
                               data={"outputs": "cls,patch_tokens,diagnostics", "diagnostics_maps": "true"})
        assert response.status_code == 200, response.text
        assert client.get("/models/toy").json()["provider"] == "CPUExecutionProvider"
    (result,) = response.json()["results"]
    return result


def test_the_exported_repository_follows_triton_layout_rules(exported):
    repo = exported[0]
    assert layout.triton_problems(repo) == []
    manifest = read_manifest(repo / "toy" / "1" / "manifest.json")
    assert manifest.variant.kind == "original" and manifest.defect.std_ddof == defects.STD_DDOF


def test_served_patch_tokens_equal_pytorch_on_the_same_pixels(exported, served):
    repo, checkpoint, photo = exported
    manifest = read_manifest(repo / "toy" / "1" / "manifest.json")
    loaded = load_model(checkpoint)
    x = load_image(photo, manifest.preprocessing.resize.short_side, manifest.architecture.patch_size)
    gh, gw = x.shape[1] // 14, x.shape[2] // 14
    assert served["grid"] == [gh, gw] == [16, 24]  # 300 x 451: the short side to 224, both rounded to 14
    with torch.no_grad():
        out = loaded.model.forward_features(x[None])
    expected = out["x_norm_patchtokens"][0].reshape(gh, gw, -1).numpy()
    got = _array(served["patch_tokens"])
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(_array(served["cls"]) - out["x_norm_clstoken"][0].numpy()).max() <= 1e-4


def test_served_diagnostics_equal_the_contract_rule_in_numpy(exported, served):
    repo, checkpoint, photo = exported
    manifest = read_manifest(repo / "toy" / "1" / "manifest.json")
    loaded = load_model(checkpoint)
    x = load_image(photo, manifest.preprocessing.resize.short_side)
    with torch.no_grad():
        prenorm = loaded.model.forward_features(x[None])["x_prenorm"]
    tokens = loaded.model.split(prenorm)["patch"][0].double().numpy()
    norms, align, mask = defects.diagnostics(tokens, np.asarray(manifest.defect.direction), manifest.defect.threshold_std)
    gh, gw = served["grid"]
    diag = served["diagnostics"]
    assert np.allclose(_array(diag["norms"]).reshape(-1), norms, rtol=1e-4)
    assert np.allclose(_array(diag["alignment"]).reshape(-1), align, atol=1e-5)
    assert (_array(diag["mask"]).reshape(-1) == mask).all()
    assert diag["defect_tokens"] == int(mask.sum()) > 0  # the toy's planted defect shows
    assert diag["defect_fraction"] == pytest.approx(mask.mean())
    assert diag["max_median_norm_ratio"] == pytest.approx(norms.max() / np.median(norms), rel=1e-4)
    assert mask.reshape(gh, gw).shape == _array(diag["mask"]).shape


def test_the_tools_preprocessing_gives_the_graph_the_services_pixels(exported, served):
    repo, _, photo = exported
    manifest = read_manifest(repo / "toy" / "1" / "manifest.json")
    pixels = load_pixels(photo, manifest.preprocessing.resize.short_side)
    session = ort.InferenceSession(str(repo / "toy" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (tokens,) = session.run(["patch_tokens"], {"images": pixels[None]})
    assert list(tokens.shape[1:3]) == served["grid"]
    assert np.abs(tokens[0] - _array(served["patch_tokens"])).max() <= 1e-6
