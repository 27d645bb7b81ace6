"""POST /features with ``Accept: application/vnd.sinder.features``: the JSON document as a header, arrays as raw bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.encode import BINARY_MEDIA_TYPE, HEADER_LENGTH
from service_test_utils import b64, decode_array, grey_with_patch, noise, png


def _binary_arrays(resp) -> tuple[dict, bytes]:
    length = int(resp.headers[HEADER_LENGTH])
    return json.loads(resp.content[:length]), resp.content[length:]


def _array(ref: dict, blob: bytes) -> np.ndarray:
    data = blob[ref["offset"]:ref["offset"] + ref["nbytes"]]
    return np.frombuffer(data, dtype=np.dtype(ref["dtype"]).newbyteorder("<")).reshape(ref["shape"])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_binary_answer_equals_the_json_one(client, dtype):
    body = {"images": [b64(png(grey_with_patch())), b64(png(noise(56, 84)))], "model": "tiny_reg", "dtype": dtype,
            "outputs": ["cls", "pooled", "patch_tokens", "registers", "diagnostics"], "diagnostics_maps": True}
    as_json = client.post("/features", json=body).json()
    resp = client.post("/features", json=body, headers={"Accept": BINARY_MEDIA_TYPE})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(BINARY_MEDIA_TYPE)
    header, blob = _binary_arrays(resp)
    assert header["model"] == "tiny_reg" and len(header["results"]) == 2
    for got, want in zip(header["results"], as_json["results"]):
        for key in ("cls", "pooled", "patch_tokens", "registers"):
            assert got[key]["dtype"] == dtype
            np.testing.assert_array_equal(_array(got[key], blob), decode_array(want[key]))
        np.testing.assert_array_equal(_array(got["diagnostics"]["mask"], blob), decode_array(want["diagnostics"]["mask"]))
        assert got["diagnostics"]["defect_tokens"] == want["diagnostics"]["defect_tokens"]
    ends = sorted(r["offset"] + r["nbytes"] for res in header["results"] for r in (res["cls"], res["patch_tokens"]))
    assert ends[-1] <= len(blob)


def test_json_stays_the_default_and_errors_stay_json(client):
    ok = client.post("/features", json={"images": [b64(png(noise(56, 56)))]}, headers={"Accept": "*/*"})
    assert ok.headers["content-type"].startswith("application/json")
    bad = client.post("/features", json={"images": ["@@"]}, headers={"Accept": BINARY_MEDIA_TYPE})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "bad_request"


@pytest.mark.parametrize("accept, binary", [
    (BINARY_MEDIA_TYPE, True),
    (f"application/json;q=0.5, {BINARY_MEDIA_TYPE}", True),
    (f"{BINARY_MEDIA_TYPE}; q=0, application/json", False),  # q=0: "not acceptable"
    ("*/*", False),
    ("application/json", False),
])
def test_accept_negotiates_the_binary_answer(client, accept, binary):
    body = {"images": [b64(png(noise(56, 56)))], "model": "tiny", "outputs": ["cls"]}
    resp = client.post("/features", json=body, headers={"Accept": accept})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith(BINARY_MEDIA_TYPE if binary else "application/json")
