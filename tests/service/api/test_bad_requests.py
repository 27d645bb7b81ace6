"""A corpus of bad images and bad requests: each gets its documented status and envelope (with the
image's index where one image is at fault), odd-but-valid images are served, and a normal request
right after each still succeeds."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from service_test_utils import b64, encode, noise, png
from PIL import Image

GOOD = png(noise(56, 56))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _chunk(b"IEND", b"")


def png16_rgb(h: int, w: int) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    rows = np.random.default_rng(0).integers(0, 65536, (h, w, 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def corrupt_png_data() -> bytes:
    data = bytearray(png(noise(56, 56)))
    start = data.index(b"IDAT") + 4
    data[start + 10:start + 200] = bytes(190)  # zeros inside the zlib stream
    return bytes(data)


def jpeg(array: np.ndarray, **kw) -> bytes:
    return encode(Image.fromarray(array), "JPEG", **kw)


def gif_animated() -> bytes:
    frames = [Image.new("RGB", (56, 56), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    return jpeg(noise(56, 112), exif=exif)


def palette_alpha() -> bytes:
    return encode(Image.fromarray(noise(56, 56)).convert("P"), "PNG", transparency=3)


def json_images(*images: bytes, **options) -> dict:
    return {"json": {"images": [b64(i) for i in images], "model": "tiny", **options}}


def multipart(*images: bytes, **fields) -> dict:
    return {"files": [("images", (f"{i}.bin", data, "application/octet-stream")) for i, data in enumerate(images)],
            "data": {"model": "tiny", **fields}}


def raw(body: bytes, content_type: str | None) -> dict:
    return {"content": body, "headers": {"content-type": content_type} if content_type else {}}


# name -> (request kwargs, status, error type or None for success, index)
BAD = {
    "truncated_jpeg": (json_images(GOOD, jpeg(noise(56, 56))[:300]), 422, "invalid_image", 1),
    "truncated_png": (json_images(png(noise(56, 56))[:200]), 422, "invalid_image", 0),
    "corrupt_jpeg": (json_images(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4), 422, "invalid_image", 0),
    "corrupt_png_data": (json_images(GOOD, GOOD, corrupt_png_data()), 422, "invalid_image", 2),
    "zero_bytes": (multipart(b""), 422, "invalid_image", 0),
    "text_file": (multipart(GOOD, b"just some text, not an image\n"), 422, "invalid_image", 1),
    "html_file": (json_images(b"<html><body>hi</body></html>"), 422, "invalid_image", 0),
    "claims_50000x50000": (json_images(GOOD, png_claiming(50000, 50000)), 413, "payload_too_large", 1),
    "invalid_base64": ({"json": {"images": [b64(GOOD), "!!not base64!!"], "model": "tiny"}}, 400, "bad_request", 1),
    "empty_base64": ({"json": {"images": [b64(GOOD), ""], "model": "tiny"}}, 422, "invalid_request", 1),
    "image_not_a_string": ({"json": {"images": [b64(GOOD), 42], "model": "tiny"}}, 422, "invalid_request", 1),
    "images_not_a_list": ({"json": {"images": b64(GOOD), "model": "tiny"}}, 422, "invalid_request", None),
    "no_images": ({"json": {"images": [], "model": "tiny"}}, 422, "invalid_request", None),
    "missing_images_field": ({"json": {"model": "tiny"}}, 422, "invalid_request", None),
    "too_many_images": (json_images(*[GOOD] * 9), 413, "payload_too_large", None),
    "too_many_files_multipart": (multipart(*[GOOD] * 9), 413, "payload_too_large", None),
    "far_too_many_files_multipart": (multipart(*[GOOD] * 12), 413, "payload_too_large", None),
    "body_over_limit": (raw(b'{"images": ["' + b"A" * 2_100_000 + b'"]}', "application/json"), 413, "payload_too_large", None),
    "unknown_model": (json_images(GOOD, model="nope"), 404, "model_not_found", None),
    "unknown_version": (json_images(GOOD, model="tiny:7"), 404, "model_not_found", None),
    "bad_dtype": (json_images(GOOD, dtype="float64"), 422, "invalid_request", None),
    "bad_output": (json_images(GOOD, outputs=["cls", "everything"]), 422, "invalid_request", None),
    "empty_outputs": (json_images(GOOD, outputs=[]), 422, "invalid_request", None),
    "bad_encoding": (json_images(GOOD, encoding="xml"), 422, "invalid_request", None),
    "unknown_option": (json_images(GOOD, colour="blue"), 422, "invalid_request", None),
    "resolution_not_multiple": (json_images(GOOD, resolution=[50, 56]), 422, "invalid_request", None),
    "resolution_too_large": (json_images(GOOD, resolution=[1400, 1400]), 422, "invalid_request", None),
    "resolution_with_keep_aspect": (json_images(GOOD, resolution=[56, 56], resize="keep_aspect"), 422, "invalid_request", None),
    "stretch_without_resolution": (json_images(GOOD, resize="stretch"), 422, "invalid_request", None),
    "bad_resize_policy": (json_images(GOOD, resize="crop"), 422, "invalid_request", None),
    "negative_short_side": (json_images(GOOD, short_side=-5), 422, "invalid_request", None),
    "registers_on_plain_model": (json_images(GOOD, outputs=["registers"]), 422, "invalid_request", None),
    "text_plain_body": (raw(b"hello", "text/plain"), 415, "unsupported_media_type", None),
    "no_content_type": (raw(b'{"images": []}', None), 415, "unsupported_media_type", None),
    "form_urlencoded": ({"data": {"images": "abc"}}, 415, "unsupported_media_type", None),
    "empty_json_body": (raw(b"", "application/json"), 400, "bad_request", None),
    "invalid_json": (raw(b'{"images": [', "application/json"), 400, "bad_request", None),
    "json_nested_too_deeply": (raw(b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"), 400, "bad_request", None),
    "json_not_utf8": (raw(b"\xff\xfe\xfa", "application/json"), 400, "bad_request", None),
    "multipart_without_boundary": (raw(b"--x\r\n", "multipart/form-data"), 400, "bad_request", None),
    "model_as_list": (json_images(GOOD, model=["tiny"]), 422, "invalid_request", None),
    "model_version_zero": (json_images(GOOD, model={"name": "tiny", "version": 0}), 422, "invalid_request", None),
    "json_array_body": (raw(b'["a"]', "application/json"), 422, "invalid_request", None),
    "multipart_without_images": ({"files": [("other", ("x.png", GOOD, "image/png"))], "data": {}}, 422, "invalid_request", None),
    "multipart_bad_option": (multipart(GOOD, dtype="int8"), 422, "invalid_request", None),
    "broken_multipart": (raw(b"--zzz\r\nnot a header line\r\n", "multipart/form-data; boundary=zzz"), 400, "bad_request", None),
}

ODD_BUT_VALID = {
    "png_16bit_grey": (json_images(encode(Image.fromarray(np.full((56, 56), 40000, np.uint16)), "PNG")), [4, 4]),
    "png_16bit_rgb": (json_images(png16_rgb(56, 70)), [4, 5]),
    "png_palette_alpha": (json_images(palette_alpha()), [4, 4]),
    "png_la": (json_images(encode(Image.fromarray(noise(56, 56)).convert("LA"), "PNG")), [4, 4]),
    "jpeg_cmyk": (json_images(encode(Image.fromarray(noise(56, 84)).convert("CMYK"), "JPEG")), [4, 6]),
    "jpeg_grey": (multipart(encode(Image.fromarray(noise(56, 56)).convert("L"), "JPEG")), [4, 4]),
    "one_pixel": (json_images(png(noise(1, 1))), [4, 4]),  # scaled up to the short side
    "animated_gif": (json_images(gif_animated()), [4, 4]),
    "exif_rotated_jpeg": (json_images(exif_rotated()), [8, 4]),  # stored 56x112 landscape, upright is portrait
    "tiff_float": (json_images(encode(Image.fromarray(np.random.default_rng(0).random((56, 56), np.float32)), "TIFF")), [4, 4]),
    "bmp": (json_images(encode(Image.fromarray(noise(56, 56)), "BMP")), [4, 4]),
    "webp": (json_images(encode(Image.fromarray(noise(56, 56)), "WEBP")), [4, 4]),
    "data_uri": ({"json": {"images": ["data:image/png;base64," + b64(GOOD)], "model": "tiny"}}, [4, 4]),
    "very_wide": (json_images(png(noise(2, 3000))), None),
}


def assert_normal_request_works(client):
    response = client.post("/features", json={"images": [b64(GOOD)], "model": "tiny", "outputs": ["cls"]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name", list(BAD))
def test_bad_request_gets_its_status_and_envelope(client, name):
    kwargs, status, error_type, index = BAD[name]
    response = client.post("/features", **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"type", "message", "index"}
    assert error["type"] == error_type
    assert error["index"] == index
    assert error["message"] and "\n" not in error["message"]
    if index is not None:
        assert f"image {index}" in error["message"] or f"images.{index}" in error["message"]
    assert_normal_request_works(client)


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_are_served(client, name):
    kwargs, grid = ODD_BUT_VALID[name]
    response = client.post("/features", **kwargs)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    if grid is not None:
        assert result["grid"] == grid
    else:
        h, w = result["grid"]
        assert 2 <= h and w <= 16 and h * w * 196 <= 224 * 224
    assert_normal_request_works(client)


def test_exif_rotation_really_turns_the_pixels(client):
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.zeros((56, 112, 3), np.uint8)
    stored[:, :56] = 255  # left half white; after a clockwise turn it is the top half
    response = client.post("/features", json={"images": [b64(jpeg(stored, exif=exif, quality=95))], "model": "tiny",
                                              "outputs": ["diagnostics"], "diagnostics_maps": True, "encoding": "json"})
    norms = np.array(response.json()["results"][0]["diagnostics"]["norms"])
    assert norms.shape == (8, 4)
    top, bottom = norms[:3].mean(), norms[-3:].mean()
    assert abs(top - bottom) > 0.5  # the halves differ top/bottom, not left/right
    assert np.allclose(norms[:3], norms[0, 0], atol=0.05)


def test_api_key_is_required_when_configured(make_client):
    client = make_client(api_key="s3cret")
    body = {"images": [b64(GOOD)], "model": "tiny", "outputs": ["cls"]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}):
        response = client.post("/features", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/models").status_code == 401
    assert client.get("/health/ready").status_code == 200  # probes and metrics stay open
    assert client.get("/metrics").status_code == 200
    ok = client.post("/features", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_unknown_route_and_method_use_the_envelope(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = client.get("/features")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "method_not_allowed"


def test_api_key_errors_say_what_was_wrong(make_client):
    client = make_client(api_key="s3cret")
    body = {"images": [b64(GOOD)], "model": "tiny", "outputs": ["cls"]}
    for headers, message in (({}, "missing API key"), ({"Authorization": "Bearer"}, "missing API key"),
                             ({"Authorization": "Basic dXNlcjpzM2NyZXQ="}, "not as 'Basic' credentials"),
                             ({"Authorization": "Bearer s3cre"}, "wrong API key")):
        response = client.post("/features", json=body, headers=headers)
        assert response.status_code == 401 and message in response.json()["error"]["message"], headers
    assert client.post("/features", json=body, headers={"Authorization": "bearer s3cret"}).status_code == 200
    for path in ("/v1/models", "/v2/models/tiny/config"):  # the new routes need the key too
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
