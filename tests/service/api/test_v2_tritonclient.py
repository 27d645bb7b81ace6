"""The KServe v2 routes driven by the real ``tritonclient[http]`` client over a loopback uvicorn."""

from __future__ import annotations

import base64
import socket
import threading
import time

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from service_test_utils import decode_array, encode, grey_with_patch, noise, png, wait_loaded  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_repo):
    """(tritonclient, url, app) against one uvicorn server in a thread of this process."""
    import uvicorn

    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(model_repo=tiny_repo, max_images=4, max_body_bytes=300_000))
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    wait_loaded(app)
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    yield client, f"http://127.0.0.1:{port}", app
    client.close()
    srv.should_exit = True
    thread.join(10)


def _features(url: str, files: list[bytes], model: str = "tiny") -> list[dict]:
    import httpx

    body = {"images": [base64.b64encode(f).decode() for f in files], "model": model,
            "outputs": ["cls", "pooled", "patch_tokens", "diagnostics"], "diagnostics_maps": True}
    resp = httpx.post(f"{url}/features", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def test_server_and_model_metadata_and_readiness(server):
    client, _, _ = server
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("tiny", "7")
    model = client.get_model_metadata("tiny")
    assert model["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    names = [o["name"] for o in model["outputs"]]
    assert names == ["cls_token", "patch_tokens", "token_norms", "defect_alignment", "defect_mask", "pooled"]
    assert client.get_model_metadata("tiny", "1")["versions"] == ["1"]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


def _pixels_input(batch: np.ndarray, binary: bool = True):
    tensor = httpclient.InferInput("images", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def _float_input(batch: np.ndarray):
    tensor = httpclient.InferInput("images", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return tensor


def _bytes_input(files: list[bytes]):
    tensor = httpclient.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_), binary_data=True)
    return tensor


@pytest.mark.parametrize("binary_in", [True, False])
def test_raw_pixels_equal_features(server, binary_in):
    client, url, _ = server
    images = [grey_with_patch(56, 84), noise(56, 84, seed=3)]  # already at the model's size: no resize either way
    result = client.infer("tiny", [_pixels_input(np.stack(images), binary_in)])  # no outputs listed: all, binary
    expected = _features(url, [png(a) for a in images])
    for i, ref in enumerate(expected):
        np.testing.assert_array_equal(result.as_numpy("cls_token")[i], decode_array(ref["cls"]))
        np.testing.assert_array_equal(result.as_numpy("pooled")[i], decode_array(ref["pooled"]))
        np.testing.assert_array_equal(result.as_numpy("patch_tokens")[i], decode_array(ref["patch_tokens"]))
        np.testing.assert_array_equal(result.as_numpy("defect_mask")[i], decode_array(ref["diagnostics"]["mask"]))
    assert result.as_numpy("defect_mask")[0].sum() == 1  # the planted white patch


def test_encoded_images_are_resized_as_features(server):
    from PIL import Image

    client, url, _ = server
    files = [encode(Image.fromarray(noise(100, 150, seed=1)), "JPEG", quality=90), png(grey_with_patch(70, 112))]
    outputs = [httpclient.InferRequestedOutput("patch_tokens", binary_data=True),
               httpclient.InferRequestedOutput("pooled", binary_data=False)]
    result = client.infer("tiny", [_bytes_input(files)], outputs=outputs)
    assert result.get_output("token_norms") is None  # only what was asked for
    expected = _features(url, files)
    assert result.as_numpy("patch_tokens").shape == (2, 4, 6, 8)  # short side 56: 100x150 -> 56x84
    for i, ref in enumerate(expected):
        np.testing.assert_array_equal(result.as_numpy("patch_tokens")[i], decode_array(ref["patch_tokens"]))
        np.testing.assert_allclose(result.as_numpy("pooled")[i], decode_array(ref["pooled"]), rtol=1e-6)


def test_json_outputs_and_fp16(server):
    client, _, _ = server
    batch = noise(56, 56, seed=5)[None]
    binary = client.infer("tiny", [_pixels_input(batch)], outputs=[httpclient.InferRequestedOutput("cls_token")])
    as_json = client.infer("tiny", [_pixels_input(batch)],
                           outputs=[httpclient.InferRequestedOutput("cls_token", binary_data=False),
                                    httpclient.InferRequestedOutput("defect_mask", binary_data=False)])
    np.testing.assert_allclose(as_json.as_numpy("cls_token"), binary.as_numpy("cls_token"), rtol=1e-6)
    assert as_json.as_numpy("defect_mask").dtype == np.bool_
    half = client.infer("tiny", [_pixels_input(batch)], outputs=[httpclient.InferRequestedOutput("cls_token")],
                        parameters={"output_datatype": "FP16"})
    assert half.get_output("cls_token")["datatype"] == "FP16"
    np.testing.assert_array_equal(half.as_numpy("cls_token"), binary.as_numpy("cls_token").astype(np.float16))


@pytest.mark.parametrize("make, status, message", [
    (lambda: [_pixels_input(np.zeros((1, 50, 56, 3), np.uint8))], "422", "multiple of 14"),
    (lambda: [_bytes_input([b"not an image"])], "422", "image 0"),
    (lambda: [_bytes_input([png(noise(56, 56))] * 5)], "413", "limit is 4"),
    (lambda: [_float_input(np.zeros((1, 56, 56, 3), np.float32))], "422", "UINT8"),
])
def test_errors_come_back_as_protocol_errors(server, make, status, message):
    client, _, _ = server
    with pytest.raises(InferenceServerException) as info:
        client.infer("tiny", make())
    assert info.value.status() == status and message in info.value.message()
    assert client.is_server_ready()  # still serving


def test_unknown_output_and_version(server):
    client, _, _ = server
    batch = noise(56, 56)[None]
    with pytest.raises(InferenceServerException, match="unknown outputs") as info:
        client.infer("tiny", [_pixels_input(batch)], outputs=[httpclient.InferRequestedOutput("logits")])
    assert info.value.status() == "422"
    with pytest.raises(InferenceServerException, match="no version 9") as info:
        client.infer("tiny", [_pixels_input(batch)], model_version="9")
    assert info.value.status() == "404"
