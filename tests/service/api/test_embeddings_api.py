"""POST /v1/embeddings: the official openai client, pointed at a real server, works unchanged."""

from __future__ import annotations

import base64
import threading
import time

import numpy as np
import openai
import pytest
import uvicorn
from service_test_utils import decode_array, grey_with_patch, noise, png, wait_loaded

from service.api.app import create_app
from service.backends.base import Backend
from service.config import Settings
from service.core.service import onnxruntime_factory

KEY = "emb3ddings-test-key"


class ClsUnlikePooled(Backend):
    """The tiny model's CLS token is the mean of its patch tokens; reversing its channels tells the poolings apart."""

    def __init__(self, inner: Backend):
        self.inner = inner

    inputs = property(lambda self: self.inner.inputs)
    outputs = property(lambda self: self.inner.outputs)
    provider = property(lambda self: self.inner.provider)

    def run(self, images):
        out = self.inner.run(images)
        out["cls_token"] = np.ascontiguousarray(out["cls_token"][..., ::-1])
        return out


def data_uri(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(array)).decode("ascii")


@pytest.fixture(scope="module")
def server(tiny_repo):
    """A real uvicorn server on a free loopback port, with an API key; yields (base_url, app)."""
    settings = Settings(model_repo=tiny_repo, api_key=KEY, max_images=4, providers=["cpu"])
    onnx = onnxruntime_factory(settings)
    app = create_app(settings, lambda path: ClsUnlikePooled(onnx(path)))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-embeddings-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    wait_loaded(app)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def images():
    return [grey_with_patch(), noise(56, 84, seed=3)]


def features(server, images, output):
    import httpx

    body = {"images": [data_uri(a) for a in images], "model": "tiny:1", "outputs": [output]}
    answer = httpx.post(server[0] + "/features", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    return [decode_array(r[output]).astype(np.float32) for r in answer.json()["results"]]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_openai_client_gets_normalized_cls_embeddings(server, oai, images):
    response = oai.embeddings.create(model="tiny:1", input=[data_uri(a) for a in images])  # asks for base64
    assert response.object == "list" and response.model == "tiny:1" and len(response.data) == 2
    expected = features(server, images, "cls")
    for i, item in enumerate(response.data):
        assert item.index == i and item.object == "embedding" and len(item.embedding) == 8
        np.testing.assert_allclose(item.embedding, unit(expected[i]), rtol=1e-5, atol=1e-6)
    assert response.usage.prompt_tokens == 2 * (4 * 6)  # 56x84 at short side 56: a 4x6 patch grid each


def test_float_encoding_and_mean_pooling_through_extra_body(server, oai, images):
    response = oai.embeddings.create(model="tiny", input=data_uri(images[1]), encoding_format="float",
                                     extra_body={"pooling": "mean", "normalize": False})
    (pooled,) = features(server, images[1:], "pooled")
    (cls,) = features(server, images[1:], "cls")
    np.testing.assert_allclose(response.data[0].embedding, pooled, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled, cls, atol=1e-3)  # the two poolings are different vectors here
    assert response.model == "tiny:1"


def test_bare_base64_and_the_model_s_own_dimensions_are_accepted(oai, images):
    raw = base64.b64encode(png(images[0])).decode("ascii")
    response = oai.embeddings.create(model="tiny_sinder:1", input=[raw], dimensions=8)
    assert len(response.data[0].embedding) == 8
    assert np.isclose(np.linalg.norm(response.data[0].embedding), 1.0, atol=1e-5)


def test_other_dimensions_are_refused_naming_the_size(oai, images):
    with pytest.raises(openai.UnprocessableEntityError) as err:
        oai.embeddings.create(model="tiny:1", input=[data_uri(images[0])], dimensions=4)
    assert "8-dimensional" in str(err.value) and "dimensions 4" in str(err.value)


def test_urls_are_refused_naming_the_index(oai, images):
    with pytest.raises(openai.UnprocessableEntityError) as err:
        oai.embeddings.create(model="tiny:1", input=[data_uri(images[0]), "https://example.com/cat.jpg"])
    body = err.value.body
    assert body["index"] == 1 and "not fetched" in body["message"]


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"input": [[1, 2, 3]]}, "data URIs or base64 strings"),
    ({"input": []}, "no image"),
    ({"modality": "text"}, "modality"),
    ({"pooling": "max"}, "pooling"),
    ({"temperature": 1}, "temperature"),
])
def test_invalid_requests_name_the_field(server, extra, fragment):
    import httpx

    body = {"model": "tiny:1", "input": [data_uri(grey_with_patch())], **extra}
    answer = httpx.post(server[0] + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=20)
    assert answer.status_code == 422, answer.text
    assert fragment in answer.json()["error"]["message"]


def test_errors_of_features_apply(server, oai, images):
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nope", input=[data_uri(images[0])])
    with pytest.raises(openai.APIStatusError) as err:
        oai.embeddings.create(model="tiny:1", input=[data_uri(images[0])] * 5)  # max_images is 4
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="tiny:1", input=["not base64 !!!"])
    with openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):
            stranger.embeddings.create(model="tiny:1", input=[data_uri(images[0])])


def test_openapi_documents_the_request_and_the_pooling_choice():
    from service.openapi import schema

    spec = schema()
    operation = spec["paths"]["/v1/embeddings"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EmbeddingsRequest")
    assert {"200", "404", "413", "422", "429"} <= set(operation["responses"])
    request = spec["components"]["schemas"]["EmbeddingsRequest"]["properties"]
    assert request["pooling"]["enum"] == ["cls", "mean"] and request["encoding_format"]["enum"] == ["float", "base64"]
    visualize = spec["components"]["schemas"]["VisualizeRequest"]["properties"]
    assert {"image", "images"} <= set(visualize)


def test_openai_client_lists_and_retrieves_the_models(oai):
    listed = oai.models.list()
    ids = [m.id for m in listed.data]
    assert ids == ["tiny:1", "tiny_reg:1", "tiny_sinder:1"]
    assert all(m.object == "model" and m.owned_by == "sinder" and m.created > 0 for m in listed.data)
    assert oai.models.retrieve("tiny").id == "tiny:1" and oai.models.retrieve("tiny_sinder:1").id == "tiny_sinder:1"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_models_need_the_api_key(server):
    import httpx

    assert httpx.get(server[0] + "/v1/models").status_code == 401


def test_null_options_are_the_defaults_and_the_user_field_is_accepted(server, images):
    import httpx

    body = {"model": "tiny:1", "input": [data_uri(images[0])], "encoding_format": None, "dimensions": None, "user": "u-1"}
    answer = httpx.post(server[0] + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["data"][0]["embedding"], list)  # float, the API's default


@pytest.mark.parametrize("text", ["a photo of a cat", "hello"])
def test_text_input_is_refused_saying_that_only_images_are_embedded(oai, text):
    with pytest.raises((openai.BadRequestError, openai.UnprocessableEntityError)) as err:
        oai.embeddings.create(model="tiny:1", input=[text])
    assert err.value.body["index"] == 0 and "embeds images only" in err.value.body["message"]


def test_async_openai_client_gets_the_same_embeddings(server, oai, images):
    import asyncio

    uris = [data_uri(a) for a in images]

    async def embed():
        async with openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=20) as client:
            return await asyncio.gather(client.embeddings.create(model="tiny:1", input=uris),
                                        client.embeddings.create(model="tiny:1", input=uris, encoding_format="float"))

    packed, floats = asyncio.run(embed())
    expected = oai.embeddings.create(model="tiny:1", input=uris)
    for a, b, c in zip(packed.data, floats.data, expected.data):
        np.testing.assert_allclose(a.embedding, c.embedding, rtol=1e-6)
        np.testing.assert_allclose(b.embedding, c.embedding, rtol=1e-6, atol=1e-7)
