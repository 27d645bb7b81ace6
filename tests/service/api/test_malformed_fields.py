"""Every field of every JSON route with the wrong type, an extreme number, unicode or an empty list: a 4xx
whose message names the field (never a 500), in the route's own error format, and the next request served."""

from __future__ import annotations

import json

import pytest
from service_test_utils import b64, noise, png

GOOD = b64(png(noise(56, 56)))
URI = "data:image/png;base64," + GOOD
V2 = "/v2/models/tiny/infer"


def _features(**fields) -> dict:
    return {"images": [GOOD], "model": "tiny", **fields}


def _embeddings(**fields) -> dict:
    return {"input": [URI], "model": "tiny", **fields}


def _visualize(**fields) -> dict:
    return {"image": GOOD, "model": "tiny", **fields}


def _v2(inputs: list | None = None, **fields) -> dict:
    return {"inputs": inputs if inputs is not None else [{"name": "images", "datatype": "BYTES", "shape": [1],
                                                          "data": [GOOD]}], **fields}


def _v2_input(**fields) -> dict:
    return _v2([{"name": "images", "datatype": "BYTES", "shape": [1], "data": [GOOD], **fields}])


# (route, body, status, a fragment the message must hold)
CASES = {
    "features images null": ("/features", {"images": None}, 422, "images"),
    "features image null": ("/features", {"images": [None]}, 422, "images.0"),
    "features model number": ("/features", _features(model=5), 422, "model"),
    "features model version string": ("/features", _features(model={"name": "tiny", "version": "x"}), 422, "version"),
    "features model unicode": ("/features", _features(model="тини🙂"), 404, "тини🙂"),
    "features outputs string": ("/features", _features(outputs="cls"), 422, "outputs"),
    "features outputs number": ("/features", _features(outputs=[1]), 422, "outputs.0"),
    "features dtype null": ("/features", _features(dtype=None), 422, "dtype"),
    "features short_side huge": ("/features", _features(short_side=10**12), 422, "short_side"),
    "features short_side fraction": ("/features", _features(short_side=1.5), 422, "short_side"),
    "features resolution one side": ("/features", _features(resolution=[56]), 422, "resolution"),
    "features resolution huge": ("/features", _features(resolution=[10**20, 56]), 422, "resolution"),
    "features resolution negative": ("/features", _features(resolution=[-56, 56]), 422, "resolution"),
    "features maps string": ("/features", _features(diagnostics_maps="maybe"), 422, "diagnostics_maps"),
    "embeddings input number": ("/v1/embeddings", _embeddings(input=5), 422, "input"),
    "embeddings input tokens": ("/v1/embeddings", _embeddings(input=[[1, 2]]), 422, "token arrays"),
    "embeddings input empty": ("/v1/embeddings", _embeddings(input=[]), 422, "no image"),
    "embeddings input empty string": ("/v1/embeddings", _embeddings(input=[""]), 400, "image 0"),
    "embeddings dimensions zero": ("/v1/embeddings", _embeddings(dimensions=0), 422, "dimensions"),
    "embeddings dimensions other": ("/v1/embeddings", _embeddings(dimensions=10**9), 422, "dimensions 1000000000"),
    "embeddings user number": ("/v1/embeddings", _embeddings(user=5), 422, "user"),
    "embeddings encoding other": ("/v1/embeddings", _embeddings(encoding_format="int8"), 422, "encoding_format"),
    "embeddings pooling null": ("/v1/embeddings", _embeddings(pooling=None), 422, "pooling"),
    "visualize both fields": ("/visualize", {"image": GOOD, "images": [GOOD]}, 422, "not both"),
    "visualize two images": ("/visualize", {"images": [GOOD, GOOD]}, 422, "images"),
    "visualize compare list": ("/visualize", _visualize(compare=[1]), 422, "compare"),
    "visualize resolution text": ("/visualize", _visualize(resolution="56x56"), 422, "resolution"),
    "v2 inputs object": (V2, {"inputs": {}}, 422, "inputs"),
    "v2 inputs empty": (V2, _v2([]), 422, "inputs"),
    "v2 two inputs of one name": (V2, _v2(_v2()["inputs"] * 2), 422, "one input named 'images'"),
    "v2 id number": (V2, _v2(id=5), 422, "id"),
    "v2 parameters list": (V2, _v2(parameters=[1]), 422, "request.parameters"),
    "v2 binary_data_output string": (V2, _v2(parameters={"binary_data_output": "yes"}), 422, "binary_data_output"),
    "v2 output_datatype other": (V2, _v2(parameters={"output_datatype": "BF16"}), 422, "output_datatype"),
    "v2 outputs object": (V2, _v2(outputs={"name": "pooled"}), 422, "outputs"),
    "v2 output name number": (V2, _v2(outputs=[{"name": 1}]), 422, "outputs[0]"),
    "v2 output binary_data string": (V2, _v2(outputs=[{"name": "pooled", "parameters": {"binary_data": 1}}]), 422,
                                     "binary_data"),
    "v2 shape string": (V2, _v2_input(shape="1"), 422, "shape"),
    "v2 shape beyond 64 bits": (V2, _v2_input(shape=[2**70]), 422, "shape"),
    "v2 shape too many dims": (V2, _v2_input(shape=[1] * 9), 422, "shape"),
    "v2 datatype lower case": (V2, _v2_input(datatype="bytes"), 422, "not bytes"),
    "v2 data string": (V2, _v2_input(data=GOOD), 422, "list of 1 base64 strings"),
    "v2 binary size string": (V2, _v2_input(parameters={"binary_data_size": "10"}), 400, "binary_data_size"),
}

RAW = {  # bodies no JSON library writes: lone surrogates, a BOM, numbers beyond any type, depth
    "features lone surrogate in model": ("/features", b'{"images": ["%s"], "model": "\\ud800"}' % GOOD.encode(), 404,
                                         "unknown model"),
    "features number of 5000 digits": ("/features", b'{"images": [], "short_side": 1%s}' % (b"0" * 5000), 400,
                                       "not valid JSON"),
    "features NaN": ("/features", b'{"images": ["%s"], "short_side": NaN}' % GOOD.encode(), 422, "short_side"),
    "embeddings lone surrogate input": ("/v1/embeddings", b'{"input": ["\\ud800"]}', 400, "image 0"),
    "v2 lone surrogate id": (V2, b'{"id": "\\ud800", "inputs": []}', 400, "not valid JSON"),
    "v2 BOM": (V2, b"\xef\xbb\xbf{}", 400, "not valid JSON"),
    "v2 nested too deeply": (V2, b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
    "v2 infinite number": (V2, b'{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1%s]}]}' % (b"0" * 400),
                           400, "not valid JSON"),
}


def _assert_served(client) -> None:
    assert client.post("/features", json=_features(outputs=["cls"])).status_code == 200
    assert client.post(V2, content=json.dumps(_v2())).status_code == 200


@pytest.mark.parametrize("case", sorted(CASES) + sorted(RAW))
def test_malformed_field_is_a_4xx_naming_it(client, case):
    route, body, status, fragment = CASES[case] if case in CASES else RAW[case]
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    response = client.post(route, content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error if route == V2 else error["message"]  # v2 speaks its protocol's {"error": "<message>"}
    assert isinstance(message, str) and fragment in message and "\n" not in message
    _assert_served(client)


@pytest.mark.parametrize("route, body", [("/features", _features()), ("/v1/embeddings", _embeddings()), (V2, _v2())])
@pytest.mark.parametrize("timeout", ["abc", "-1", "0", "nan", ""])
def test_a_bad_deadline_header_is_a_422_naming_it(client, route, body, timeout):
    response = client.post(route, content=json.dumps(body), headers={"content-type": "application/json",
                                                                     "X-Request-Timeout": timeout})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    message = error if route == V2 else error["message"]
    assert message.startswith("X-Request-Timeout: ") and "{" not in message
