"""KServe v2 as other Triton clients use it: the asyncio client, image files of many kinds, compressed
requests, the model configuration extension, and the same numbers as /features and /v1/embeddings."""

from __future__ import annotations

import asyncio
import gzip
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

httpclient = pytest.importorskip("tritonclient.http")
aioclient = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

from service_test_utils import b64, decode_array, encode, noise, running_server  # noqa: E402


@pytest.fixture(scope="module")
def url(tiny_repo):
    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(model_repo=tiny_repo, max_images=4, max_body_bytes=400_000))
    with running_server(app) as address:
        yield address


def _photo(h: int = 70, w: int = 98) -> np.ndarray:
    """Smooth gradients (what a photo's JPEG looks like), at a size the service must resize (70x98 -> 56x84)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 64 * 4], -1).astype(np.uint8)


def _files() -> dict[str, bytes]:
    photo = Image.fromarray(_photo())
    rgba = photo.convert("RGBA")
    rgba.putalpha(100)
    turned = Image.Exif()
    turned[0x0112] = 6
    frames = io.BytesIO()
    photo.save(frames, "WEBP", save_all=True, append_images=[Image.fromarray(255 - _photo())], lossless=True)
    return {
        "png": encode(photo, "PNG"), "webp": encode(photo, "WEBP", lossless=True),
        "grey_png": encode(photo.convert("L"), "PNG"), "rgba_png": encode(rgba, "PNG"),
        "exif_rotated_jpeg": encode(photo, "JPEG", exif=turned, quality=95),
        "progressive_jpeg": encode(photo, "JPEG", progressive=True, quality=95),
        "cmyk_jpeg": encode(photo.convert("CMYK"), "JPEG"), "animated_webp": frames.getvalue(),
    }


FILES = _files()


def _bytes_input(module, files: list[bytes]):
    tensor = module.InferInput("images", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    return tensor


def _features(url: str, files: list[bytes]) -> list[dict]:
    body = {"images": [b64(f) for f in files], "model": "tiny", "outputs": ["cls", "patch_tokens"]}
    answer = httpx.post(f"http://{url}/features", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


# One request per input size: a v2 output is one [B, ...] tensor (the EXIF-turned JPEG is portrait).
@pytest.mark.parametrize("names", [["png", "webp", "grey_png", "rgba_png"], ["progressive_jpeg", "cmyk_jpeg", "animated_webp"],
                                   ["exif_rotated_jpeg"]])
def test_every_kind_of_file_gives_the_same_numbers_on_v2_features_and_embeddings(url, names):
    files = [FILES[n] for n in names]
    client = httpclient.InferenceServerClient(url)
    result = client.infer("tiny", [_bytes_input(httpclient, files)],
                          outputs=[httpclient.InferRequestedOutput("cls_token"),
                                   httpclient.InferRequestedOutput("patch_tokens", binary_data=False)])
    client.close()
    expected = _features(url, files)
    uris = [f"data:image/{n.split('_')[-1]};base64," + b64(f) for n, f in zip(names, files)]
    embedded = httpx.post(f"http://{url}/v1/embeddings", json={"model": "tiny", "input": uris,
                                                              "encoding_format": "float"}, timeout=30).json()["data"]
    for i, ref in enumerate(expected):
        tokens, cls = decode_array(ref["patch_tokens"]), decode_array(ref["cls"])
        assert tokens.shape == ((6, 4, 8) if names[i] == "exif_rotated_jpeg" else (4, 6, 8)), names[i]
        np.testing.assert_array_equal(result.as_numpy("patch_tokens")[i], tokens, err_msg=names[i])
        np.testing.assert_array_equal(result.as_numpy("cls_token")[i], cls, err_msg=names[i])
        np.testing.assert_allclose(embedded[i]["embedding"], cls / np.linalg.norm(cls), rtol=1e-5, atol=1e-6)


def test_async_client_metadata_readiness_and_concurrent_inference(url):
    pixels = _photo(56, 84)[None]

    async def run():
        client = aioclient.InferenceServerClient(url)
        try:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready("tiny", "1") and not await client.is_model_ready("tiny", "2")
            assert "model_configuration" in (await client.get_server_metadata())["extensions"]
            assert (await client.get_model_metadata("tiny", "1"))["versions"] == ["1"]
            raw = aioclient.InferInput("images", list(pixels.shape), "UINT8")
            raw.set_data_from_numpy(pixels)
            wanted = [aioclient.InferRequestedOutput("pooled")]
            answers = await asyncio.gather(
                *[client.infer("tiny", [raw], outputs=wanted) for _ in range(4)],
                client.infer("tiny", [_bytes_input(aioclient, [FILES["png"]])], model_version="1", outputs=wanted))
            with pytest.raises(InferenceServerException, match="image 0") as bad:
                await client.infer("tiny", [_bytes_input(aioclient, [b"not an image"])])
            assert bad.value.status() == "422"
            return answers
        finally:
            await client.close()

    answers = asyncio.run(run())
    first = answers[0].as_numpy("pooled")
    assert first.shape == (1, 8) and all(np.array_equal(a.as_numpy("pooled"), first) for a in answers[:4])
    # The 70x98 PNG resized to 56x84 is not the 56x84 pixels: a different answer, of the same shape.
    assert answers[4].as_numpy("pooled").shape == (1, 8)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_give_the_uncompressed_answer(url, algorithm):
    client = httpclient.InferenceServerClient(url)
    inputs = [_bytes_input(httpclient, [FILES["png"], FILES["webp"]])]
    plain = client.infer("tiny", inputs)
    packed = client.infer("tiny", inputs, request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    client.close()
    for name in ("cls_token", "patch_tokens", "defect_mask", "pooled"):
        np.testing.assert_array_equal(packed.as_numpy(name), plain.as_numpy(name))


def test_model_configuration_says_what_the_service_runs(url):
    client = httpclient.InferenceServerClient(url)
    config = client.get_model_config("tiny")
    assert client.get_model_config("tiny", "1") == config
    with pytest.raises(InferenceServerException, match="no version 4") as missing:
        client.get_model_config("tiny", "4")
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_config("nope")
    client.close()
    assert missing.value.status() == "404"
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == 16
    assert config["input"] == [{"name": "images", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3], "format": "FORMAT_NONE"}]
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["patch_tokens"] == {"name": "patch_tokens", "data_type": "TYPE_FP32", "dims": [-1, -1, 8]}
    assert outputs["defect_mask"]["data_type"] == "TYPE_BOOL" and outputs["pooled"]["dims"] == [8]
    assert config["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]


def test_unserved_v2_routes_answer_with_the_protocol_s_error_string(url):
    client = httpclient.InferenceServerClient(url)
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("tiny")  # Triton's statistics extension: not served here
    client.close()
    assert info.value.status() == "404" and info.value.message() == "Not Found: GET /v2/models/tiny/stats"
    wrong_method = httpx.get(f"http://{url}/v2/models/tiny/infer")
    assert wrong_method.status_code == 405 and isinstance(wrong_method.json()["error"], str)


def _infer(url: str, doc: dict) -> httpx.Response:
    return httpx.post(f"http://{url}/v2/models/tiny/infer", content=json.dumps(doc), timeout=30)


def test_null_parameters_and_an_empty_output_list_mean_none_given(url):
    """As pydantic-based clients (MLServer's types) write unset fields, and as Triton reads an empty list."""
    image = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [b64(FILES["png"])], "parameters": None}
    answer = _infer(url, {"id": None, "parameters": None, "inputs": [image], "outputs": []})
    assert answer.status_code == 200, answer.text
    names = [o["name"] for o in answer.json()["outputs"]]
    assert names == ["cls_token", "patch_tokens", "token_norms", "defect_alignment", "defect_mask", "pooled"]
    one = _infer(url, {"inputs": [image], "outputs": [{"name": "pooled", "parameters": None}]})
    assert [o["name"] for o in one.json()["outputs"]] == ["pooled"]


def test_gzip_bomb_on_v2_is_413_and_the_next_request_is_served(url):
    bomb = gzip.compress(bytes(5_000_000), compresslevel=1)
    answer = httpx.post(f"http://{url}/v2/models/tiny/infer", content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and "inflates to more than the limit" in answer.json()["error"]
    image = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [b64(encode(Image.fromarray(noise(56, 56)), "PNG"))]}
    assert _infer(url, {"inputs": [image]}).status_code == 200


def test_files_of_different_aspect_ratios_in_one_request_are_a_422_naming_them(url):
    client = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("tiny", [_bytes_input(httpclient, [FILES["png"], FILES["exif_rotated_jpeg"]])])
        assert info.value.status() == "422" and "images 0 and 1" in info.value.message()
        assert client.is_server_ready()
    finally:
        client.close()


def test_triton_extensions_that_are_not_served_are_refused_by_name(url):
    client = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException, match="classification extension is not supported") as info:
            client.infer("tiny", [_bytes_input(httpclient, [FILES["png"]])],
                         outputs=[httpclient.InferRequestedOutput("cls_token", class_count=3)])
        assert info.value.status() == "422"
        region = httpclient.InferInput("images", [1, 56, 56, 3], "UINT8")
        region.set_shared_memory("images_region", 56 * 56 * 3)
        with pytest.raises(InferenceServerException, match="shared memory is not supported"):
            client.infer("tiny", [region])
        assert client.infer("tiny", [_bytes_input(httpclient, [FILES["png"]])]).as_numpy("pooled").shape == (1, 8)
    finally:
        client.close()
