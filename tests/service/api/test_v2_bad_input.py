"""Every bad v2 request gets a 4xx with the protocol's ``{"error": ...}`` body, and the service keeps serving."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from service_test_utils import b64, noise, png

URL = "/v2/models/tiny/infer"


def _binary(header: dict, payload: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    return text + payload, {"Inference-Header-Content-Length": str(len(text) if header_length is None else header_length)}


def _pixels(shape, payload: bytes | None = None, size: int | None = None, datatype="UINT8", name="images", **extra):
    payload = bytes(int(np.prod(shape))) if payload is None else payload
    size = len(payload) if size is None else size
    header = {"inputs": [{"name": name, "datatype": datatype, "shape": list(shape),
                          "parameters": {"binary_data_size": size}}], **extra}
    return _binary(header, payload)


def _files(files: list[bytes], shape=None, sizes: list[int] | None = None):
    sizes = sizes or [len(f) for f in files]
    payload = b"".join(struct.pack("<I", n) + f for n, f in zip(sizes, files))
    return _binary({"inputs": [{"name": "images", "datatype": "BYTES", "shape": shape or [len(files)],
                                "parameters": {"binary_data_size": len(payload)}}]}, payload)


def _jpeg(h=56, w=56) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(h, w)).save(buf, "JPEG")
    return buf.getvalue()


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, "PNG")  # 81 MP claimed, a few kB of file
    return buf.getvalue()


CASES = {
    "header length beyond the body": (lambda: _binary({"inputs": []}, b"", header_length=10_000), 400, "Inference-Header-Content-Length"),
    "header length not a number": (lambda: (b"{}", {"Inference-Header-Content-Length": "12abc"}), 400, "integer"),
    "header not JSON": (lambda: (b"{nope", {}), 400, "not valid JSON"),
    "binary size past the body": (lambda: _pixels([1, 56, 56, 3], bytes(100), size=56 * 56 * 3), 400, "only 100 bytes"),
    "binary bytes left over": (lambda: _pixels([1, 56, 56, 3], bytes(56 * 56 * 3 + 7), size=56 * 56 * 3), 400, "add up to"),
    "binary size not the shape's": (lambda: _pixels([1, 56, 56, 3], bytes(56 * 56 * 3 - 3)), 400, "needs 9408 bytes"),
    "shape lies hugely": (lambda: _pixels([100000, 10000, 10000, 3], bytes(30)), 400, "needs"),
    "BYTES element length lies": (lambda: _files([b"abc"], sizes=[2**31]), 400, "declares 2147483648 bytes"),
    "BYTES count lies": (lambda: _files([_jpeg()], shape=[8]), 400, "element 1 of 8"),
    "truncated JPEG": (lambda: _files([_jpeg(), _jpeg()[:300]]), 422, "image 1"),
    "corrupt image": (lambda: _files([b"\x89PNG\r\n\x1a\n" + bytes(64)]), 422, "image 0"),
    "huge image": (lambda: _files([_huge_png()]), 413, "over the limit"),
    "wrong datatype": (lambda: _pixels([1, 56, 56, 3], bytes(56 * 56 * 3 * 4), datatype="FP32"), 422, "UINT8"),
    "wrong shape": (lambda: _pixels([1, 56, 56, 4]), 422, "[B, H, W, 3]"),
    "size the model refuses": (lambda: _pixels([1, 50, 56, 3]), 422, "multiple of 14"),
    "unknown input": (lambda: _pixels([1, 56, 56, 3], name="pixels"), 422, "one input named 'images'"),
    "unknown output": (lambda: _pixels([1, 56, 56, 3], outputs=[{"name": "logits"}]), 422, "unknown outputs"),
    "bad output_datatype": (lambda: _pixels([1, 56, 56, 3], parameters={"output_datatype": "INT8"}), 422, "output_datatype"),
    "too many images": (lambda: _pixels([9, 56, 56, 3]), 413, "limit is 8"),
    "no image": (lambda: _pixels([0, 56, 56, 3]), 422, "at least one"),
    "body over the limit": (lambda: _pixels([1, 56, 56, 3], bytes(2_100_000), size=56 * 56 * 3), 413, "over the limit"),
    "JSON pixel out of range": (lambda: (json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 3],
                                                                  "data": [300] * (28 * 28 * 3)}]}).encode(), {}), 422, "[0, 255]"),
    "JSON pixels as floats": (lambda: (json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 3],
                                                                "data": [1.7] * (28 * 28 * 3)}]}).encode(), {}), 422, "integers"),
    "JSON pixels as booleans": (lambda: (json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 3],
                                                                  "data": [True] * (28 * 28 * 3)}]}).encode(), {}), 422, "integers"),
    "JSON pixels too few": (lambda: (json.dumps({"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 28, 28, 3],
                                                              "data": [1, 2, 3]}]}).encode(), {}), 422, "2352 integers"),
    "JSON BYTES not base64": (lambda: (json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                                                "data": ["@@@"]}]}).encode(), {}), 400, "base64"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_gets_protocol_error_and_service_keeps_serving(client, case):
    make, status, message = CASES[case]
    body, headers = make()
    resp = client.post(URL, content=body, headers=headers)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert isinstance(error, str) and message in error
    ok = client.post(URL, content=json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                                          "data": [b64(png(noise(56, 56)))]}]}).encode())
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path, message", [
    ("/v2/models/nope/infer", "unknown model"),
    ("/v2/models/tiny/versions/3/infer", "no version 3"),
    ("/v2/models/tiny/versions/x1/infer", "positive integer"),
])
def test_unknown_model_or_version_is_404(client, path, message):
    body, headers = _pixels([1, 56, 56, 3])
    resp = client.post(path, content=body, headers=headers)
    assert resp.status_code == 404 and message in resp.json()["error"]


def test_api_key_errors_use_the_protocol_body(make_client):
    client = make_client(api_key="s3cret")
    body, headers = _pixels([1, 56, 56, 3])
    resp = client.post(URL, content=body, headers=headers)
    assert resp.status_code == 401 and "API key" in resp.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200  # health stays open
    ok = client.post(URL, content=body, headers={**headers, "Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
