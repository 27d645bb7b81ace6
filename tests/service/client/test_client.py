"""The typed client: against a stub of the HTTP contract (client_stub.py) and against the
service's own ASGI app (tiny model repository from tests/service/conftest.py)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from client_stub import GRID, C, features_of, stub_app
from fastapi.testclient import TestClient
from PIL import Image

from service.client import NO_RETRY, ClientInputError, FeatureClient, FeatureClientError, ServiceError, decode_array, encode_image


@pytest.fixture()
def app():
    return stub_app()


@pytest.fixture()
def client(app):
    with TestClient(app) as http:
        yield FeatureClient(http_client=http)


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def pixels():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (20 + 7 * i, 30, 3), dtype=np.uint8) for i in range(3)]


def test_every_input_kind_reaches_the_server_as_the_same_pixels(client, pixels, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(pixels[0]))
    inputs = [str(path), _png(pixels[1]), Image.fromarray(pixels[2]), pixels[0], path]
    results = client.features(inputs, outputs=("cls",))
    assert [r.index for r in results] == list(range(len(inputs)))
    expected = [pixels[0], pixels[1], pixels[2], pixels[0], pixels[0]]
    for res, px in zip(results, expected):
        np.testing.assert_allclose(res.cls, features_of(px)["cls"], rtol=1e-6)
        assert res.cls.dtype == np.float32
        assert res.grid == GRID and res.model == "demo" and res.model_version == 1
        assert res.pooled is None and res.patch_tokens is None


def test_one_image_needs_no_list(client, pixels):
    (res,) = client.features(pixels[1], outputs=("cls", "pooled"))
    np.testing.assert_allclose(res.pooled, features_of(pixels[1])["patch"].mean((0, 1)), rtol=1e-6)


@pytest.mark.parametrize("encoding", ["base64", "json"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_encodings_and_dtypes_decode_to_the_same_arrays(client, pixels, encoding, dtype):
    (res,) = client.features([pixels[0]], outputs=("cls", "patch_tokens", "diagnostics"), dtype=dtype, encoding=encoding)
    ref = features_of(pixels[0])
    assert res.patch_tokens.shape == (*GRID, C)
    assert res.patch_tokens.dtype == np.dtype(dtype)
    np.testing.assert_allclose(res.patch_tokens, ref["patch"].astype(dtype), rtol=1e-3)
    assert res.diagnostics["defect_tokens"] == 1
    assert res.diagnostics["mask"].dtype == np.bool_
    np.testing.assert_array_equal(res.diagnostics["mask"], ref["mask"])
    assert res.timing == {"queue_ms": 1.0, "inference_ms": 2.0}


def test_multipart_upload_gives_the_same_features(client, pixels):
    a = client.features(pixels[:2], outputs=("cls", "patch_tokens"))
    b = client.features(pixels[:2], outputs=("cls", "patch_tokens"), multipart=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.cls, y.cls)
        np.testing.assert_array_equal(x.patch_tokens, y.patch_tokens)


def test_error_envelope_becomes_a_typed_exception_with_index(client, pixels):
    with pytest.raises(ServiceError) as err:
        client.features([pixels[0], b"not an image", pixels[1]])
    e = err.value
    assert (e.status, e.type, e.index) == (400, "invalid_image", 1)
    assert "image 1" in str(e) and "400" in str(e)


def test_unknown_model_is_404(client, pixels):
    with pytest.raises(ServiceError) as err:
        client.features([pixels[0]], model="nope")
    assert err.value.status == 404 and err.value.index is None and "nope" in err.value.message
    with pytest.raises(ServiceError) as err:
        client.model("nope")
    assert err.value.status == 404


def test_queue_full_carries_retry_after(app, pixels):
    app.state.flags["busy"] = True
    with TestClient(app) as http, pytest.raises(ServiceError) as err:
        FeatureClient(http_client=http, retry=NO_RETRY).features([pixels[0]])
    assert err.value.status == 429 and err.value.retry_after == 2.0 and err.value.attempts == 1


def test_api_key_is_sent_as_bearer(app, pixels):
    app.state.need_key = True
    with TestClient(app) as http:
        with pytest.raises(ServiceError) as err:
            FeatureClient(http_client=http).features([pixels[0]])
        assert err.value.status == 401
        assert FeatureClient(api_key="secret", http_client=http).features([pixels[0]])[0].cls is not None


def test_health_reports_readiness_without_raising(app, client):
    h = client.health()
    assert h.live and h.ready
    app.state.flags["ready"] = False
    h = client.health()
    assert h.live and not h.ready


def test_models_listing(client):
    assert client.models()["models"][0]["name"] == "demo"
    assert client.model("demo")["version"] == 1


def test_bad_inputs_are_refused_before_sending(tmp_path):
    with pytest.raises(ClientInputError, match="missing.png"):
        encode_image(tmp_path / "missing.png")
    with pytest.raises(ClientInputError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ClientInputError, match="unsupported image type"):
        encode_image(3.5)
    with pytest.raises(ClientInputError, match="no images"):
        FeatureClient(http_client=object()).features([])


def test_decode_array_checks_size_and_handles_nulls():
    good = {"dtype": "float32", "shape": [2], "data": base64.b64encode(np.arange(2, dtype="<f4").tobytes()).decode()}
    np.testing.assert_array_equal(decode_array(good), [0, 1])
    with pytest.raises(ValueError, match="shape"):
        decode_array({**good, "shape": [3]})
    out = decode_array([[1.0, None], [2.0, 3.0]], "float32")
    assert out.dtype == np.float32 and np.isnan(out[0, 1])


def test_client_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, service.client; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- against the real app -------------------------------------------------------------------------

def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def grey_with_patch() -> np.ndarray:
    """Grey with one white 14x14 patch: the tiny model's one defect token (tests/service/tiny_repo.py)."""
    array = np.full((56, 84, 3), 120, np.uint8)
    array[14:28, 28:42] = 255
    return array


@pytest.fixture()
def real(make_client):
    return FeatureClient(http_client=make_client())


def test_real_app_all_input_kinds_agree(real, tmp_path):
    px = noise(70, 98, seed=5)
    path = tmp_path / "x.png"
    path.write_bytes(_png(px))
    results = real.features([px, path, str(path), _png(px), Image.fromarray(px)], outputs=("cls", "patch_tokens"))
    assert len(results) == 5 and [r.index for r in results] == [0, 1, 2, 3, 4]
    for r in results[1:]:
        np.testing.assert_array_equal(r.cls, results[0].cls)
        np.testing.assert_array_equal(r.patch_tokens, results[0].patch_tokens)
    first = results[0]
    assert first.model == "tiny_sinder" and first.model_version == 1
    assert first.patch_tokens.shape == (*first.grid, 8) and first.cls.shape == (8,)
    assert set(first.timing) >= {"queue_ms", "inference_ms"}


def test_real_app_encodings_decode_to_the_same_numbers(real):
    img = grey_with_patch()
    ref = real.features([img], outputs=("cls", "pooled", "patch_tokens", "diagnostics"), diagnostics_maps=True)[0]
    assert ref.diagnostics["defect_tokens"] == 1 and ref.diagnostics["mask"].sum() == 1
    for encoding in ("base64", "json"):
        for dtype in ("float32", "float16"):
            got = real.features([img], outputs=("cls", "pooled", "patch_tokens", "diagnostics"), dtype=dtype,
                                encoding=encoding, diagnostics_maps=True)[0]
            assert got.patch_tokens.dtype == np.dtype(dtype) and got.pooled.dtype == np.dtype(dtype)
            tol = 1e-6 if dtype == "float32" else 2e-3
            np.testing.assert_allclose(got.patch_tokens, ref.patch_tokens, rtol=tol, atol=tol)
            np.testing.assert_allclose(got.pooled, ref.patch_tokens.mean((0, 1)), rtol=tol, atol=tol)
            np.testing.assert_array_equal(got.diagnostics["mask"], ref.diagnostics["mask"])


def test_real_app_multipart_equals_json(real):
    imgs = [noise(56, 56, seed=1), grey_with_patch()]
    a = real.features(imgs, model="tiny", outputs=("cls", "patch_tokens"))
    b = real.features(imgs, model="tiny", outputs=("cls", "patch_tokens"), multipart=True)
    assert [r.model for r in b] == ["tiny", "tiny"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.patch_tokens, y.patch_tokens)


def test_real_app_errors_name_the_image_and_status(real):
    with pytest.raises(ServiceError) as err:
        real.features([noise(56, 56), b"\x89PNG\r\n\x1a\n truncated", noise(56, 56)])
    assert 400 <= err.value.status < 500 and err.value.index == 1
    with pytest.raises(ServiceError) as err:
        real.features([noise(56, 56)], model="missing_model")
    assert err.value.status == 404 and "missing_model" in err.value.message
    with pytest.raises(ServiceError) as err:
        real.features([noise(56, 56)], outputs=("nonsense",))
    assert err.value.status == 422


def test_real_app_api_key(make_client):
    http = make_client(api_key="k3y")
    with pytest.raises(ServiceError) as err:
        FeatureClient(http_client=http).features([noise(56, 56)])
    assert err.value.status == 401
    assert FeatureClient(api_key="k3y", http_client=http).features([noise(56, 56)])[0].cls is not None


def test_real_app_health_and_models(real):
    h = real.health()
    assert h.live and h.ready
    listing = real.models()
    names = {m["name"] for m in listing["models"]}
    assert {"tiny", "tiny_sinder", "tiny_reg"} <= names
    assert real.model("tiny")["name"] == "tiny"


def test_real_app_registers_and_writable_arrays(real):
    for encoding in ("base64", "json"):
        (res,) = real.features([noise(56, 56)], model="tiny_reg", outputs=("cls", "patch_tokens", "registers"),
                               encoding=encoding)
        assert res.registers.shape == (2, 8) and res.registers.dtype == np.float32
        for arr in (res.cls, res.patch_tokens, res.registers):
            assert arr.flags.writeable
            arr *= 2  # a downstream team normalises in place


def test_real_app_visualize_returns_a_png_of_both_models(real):
    png = real.visualize(grey_with_patch(), model="tiny")
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.width > 56 and picture.height > 2 * 56
    with pytest.raises(ServiceError) as err:
        real.visualize(grey_with_patch(), model="missing_model")
    assert err.value.status == 404


def test_one_base_class_for_every_error(client, pixels):
    with pytest.raises(FeatureClientError):
        client.features([])
    with pytest.raises(FeatureClientError):
        client.features([pixels[0]], model="nope")


def test_real_app_long_lists_are_chunked_by_its_info(make_client):
    http = make_client(max_images=2)
    client = FeatureClient(http_client=http)
    limits = client.limits()
    assert (limits.source, limits.max_images) == ("info", 2)
    imgs = [noise(56, 56, seed=i) for i in range(5)]
    results = client.features(imgs, outputs=("cls",))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    for res, img in zip(results, imgs):
        np.testing.assert_allclose(res.cls, client.features(img, outputs=("cls",))[0].cls, rtol=1e-5, atol=1e-6)
    with pytest.raises(ServiceError) as err:  # the same list in one request is refused
        FeatureClient(http_client=http, max_images=64, max_body_bytes=10**7).features(imgs)
    assert err.value.status == 413
