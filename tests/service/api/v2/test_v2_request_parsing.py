"""service.api.v2.request and .response as pure functions: sizes checked against the body, views not copies."""

from __future__ import annotations

import json
import struct
import tracemalloc

import numpy as np
import pytest

from service.api.v2 import request as v2req
from service.api.v2 import response as v2resp
from service.core.errors import BadRequest, InvalidInput


def _body(inputs: list[dict], payload: bytes, **extra) -> tuple[bytes, str]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + payload, str(len(header))


def test_pixels_are_a_view_into_the_body():
    pixels = np.arange(2 * 28 * 42 * 3, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 42, 3)
    body, length = _body([{"name": "images", "datatype": "UINT8", "shape": [2, 28, 42, 3],
                           "parameters": {"binary_data_size": pixels.nbytes}}], pixels.tobytes())
    images = v2req.images_input(v2req.parse(body, length))
    np.testing.assert_array_equal(images, pixels)
    assert np.shares_memory(images, np.frombuffer(body, np.uint8))


def test_lying_sizes_allocate_nothing_near_what_they_claim():
    claims = [
        _body([{"name": "images", "datatype": "BYTES", "shape": [10**9],
                "parameters": {"binary_data_size": 8}}], struct.pack("<I", 2**32 - 1) + b"abcd"),
        _body([{"name": "images", "datatype": "UINT8", "shape": [10**6, 10**4, 10**4, 3],
                "parameters": {"binary_data_size": 12}}], bytes(12)),
        _body([{"name": "images", "datatype": "UINT8", "shape": [1, 2, 2, 3],
                "parameters": {"binary_data_size": 2**62}}], bytes(12)),
    ]
    tracemalloc.start()
    try:
        for body, length in claims:
            with pytest.raises(BadRequest):
                v2req.images_input(v2req.parse(body, length))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("length", ["0", "999", "-4", "1e3"])
def test_header_length_must_lie_inside_the_body(length):
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        v2req.split_body(b'{"inputs": []}', length)


def test_bytes_elements_are_split_exactly():
    files = [b"one", b"", b"three!"]
    payload = b"".join(struct.pack("<I", len(f)) + f for f in files)
    assert v2req.split_bytes(memoryview(payload), 3) == files
    with pytest.raises(BadRequest, match="left over"):
        v2req.split_bytes(memoryview(payload + b"x"), 3)
    with pytest.raises(BadRequest, match="past the end"):
        v2req.split_bytes(memoryview(payload), 4)


def test_outputs_selection_defaults_and_binary_flags():
    body, length = _body([{"name": "images", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 3]}], b"",
                         outputs=[{"name": "pooled"}, {"name": "cls_token", "parameters": {"binary_data": True}}],
                         parameters={"binary_data_output": False, "output_datatype": "FP16"})
    parsed = v2req.parse(body, None)  # JSON only: no binary section
    chosen = v2resp.select(parsed, ["cls_token", "patch_tokens"])
    assert [(o.name, o.binary) for o in chosen] == [("pooled", False), ("cls_token", True)]
    assert parsed.output_datatype == "FP16"
    everything = v2req.InferRequest(None, parsed.inputs, None, True)
    assert [o.name for o in v2resp.select(everything, ["cls_token", "patch_tokens"])] == ["cls_token", "patch_tokens", "pooled"]
    with pytest.raises(InvalidInput, match="unknown outputs"):
        v2resp.select(v2req.InferRequest(None, [], [v2req.RequestedOutput("x", None)], False), ["cls_token"])


def test_encode_binary_and_json_outputs():
    tokens = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[True, False]])
    per_image = [{"patch_tokens": t, "defect_mask": m} for t, m in zip(tokens, [mask[0], mask[0]])]
    wanted = [v2req.RequestedOutput("patch_tokens", True), v2req.RequestedOutput("defect_mask", False)]
    body, header_length = v2resp.encode("m", 3, "req-1", v2resp.outputs(per_image, wanted, "FP16"))
    body = bytes(body)
    header = json.loads(body[:header_length])
    assert header["id"] == "req-1" and header["model_version"] == "3"
    first, second = header["outputs"]
    assert first["datatype"] == "FP16" and first["parameters"]["binary_data_size"] == tokens.size * 2
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f2").reshape(2, 3, 4), tokens)
    assert second["data"] == [True, False, True, False] and second["shape"] == [2, 2]
    nan = v2resp.outputs([{"x": np.array([np.nan, 1.0], np.float32)}], [v2req.RequestedOutput("x", False)], "FP32")
    only_json, none = v2resp.encode("m", 1, None, nan)
    assert none is None and json.loads(only_json)["outputs"][0]["data"] == [None, 1.0]


def test_gather_casts_in_the_copy_and_pools_in_float32():
    per_image = [{"patch_tokens": np.full((2, 2, 3), i, np.float32), "defect_mask": np.zeros((2, 2), bool)} for i in range(3)]

    def one(name: str, datatype: str) -> np.ndarray:
        return v2resp.gather(v2resp.outputs(per_image, [v2req.RequestedOutput(name, True)], datatype)[0])

    tokens = one("patch_tokens", "FP16")
    assert tokens.dtype == np.float16 and tokens.shape == (3, 2, 2, 3)
    assert one("defect_mask", "FP16").dtype == np.bool_
    np.testing.assert_array_equal(one("pooled", "FP32")[:, 0], [0.0, 1.0, 2.0])
