"""POST /visualize: a PNG with a row per model of the original/repaired pair."""

from __future__ import annotations

import io

import numpy as np
import pytest
from service_test_utils import b64, grey_with_patch, png
from PIL import Image


def picture(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_pair_gives_two_rows_and_single_model_one(client):
    image = b64(png(grey_with_patch(56, 84, at=(1, 2))))
    both = picture(client.post("/visualize", json={"image": image, "model": "tiny", "resize": "native"}))
    single = picture(client.post("/visualize", json={"image": image, "model": "tiny", "compare": False, "resize": "native"}))
    from_repaired = picture(client.post("/visualize", json={"image": image, "model": "tiny_sinder", "resize": "native"}))
    # the second row adds a row's height; the legend below is drawn once
    assert both.shape[1] == single.shape[1] and both.shape[0] - single.shape[0] > 0.5 * single.shape[0]
    assert from_repaired.shape == both.shape
    no_pair = picture(client.post("/visualize", json={"image": image, "model": "tiny_reg", "resize": "native"}))
    assert no_pair.shape == single.shape


def test_defect_tokens_are_outlined_in_cyan(client):
    image = b64(png(grey_with_patch(56, 84, at=(1, 2))))
    out = picture(client.post("/visualize", json={"image": image, "model": "tiny", "compare": False, "resize": "native"}))
    cyan = (out[..., 0] < 30) & (out[..., 1] > 225) & (out[..., 2] > 225)
    ys, xs = np.nonzero(cyan)
    assert len(ys) > 0
    width = out.shape[1]
    # on the image and on the heat map, not on the PCA panel
    assert xs.min() < width / 3 and xs.max() > width / 3 and xs.max() < 2 * width / 3


def test_multipart_and_errors(client):
    ok = client.post("/visualize", files={"image": ("a.png", png(grey_with_patch()), "image/png")}, data={"model": "tiny"})
    picture(ok)
    bad = client.post("/visualize", json={"image": b64(b"not an image"), "model": "tiny"})
    assert bad.status_code == 422 and bad.json()["error"]["index"] == 0
    unknown = client.post("/visualize", json={"image": b64(png(grey_with_patch())), "model": "nope"})
    assert unknown.status_code == 404


def test_the_features_field_name_images_is_accepted_too(client):
    data = png(grey_with_patch(56, 84, at=(1, 2)))
    body = {"model": "tiny", "compare": False, "resize": "native"}
    by_image = picture(client.post("/visualize", json={**body, "image": b64(data)}))
    by_images = picture(client.post("/visualize", json={**body, "images": [b64(data)]}))
    assert np.array_equal(by_image, by_images)
    form = {"model": "tiny", "compare": "false", "resize": "native"}
    multipart = picture(client.post("/visualize", files={"images": ("a.png", data, "image/png")}, data=form))
    assert np.array_equal(multipart, by_image)


@pytest.mark.parametrize(("kwargs", "status", "fragment"), [
    ({"json": {"images": ["AAAA", "AAAA"]}}, 422, "at most 1"),
    ({"json": {"image": "AAAA", "images": ["AAAA"]}}, 422, "not both"),
    ({"json": {"model": "tiny"}}, 422, "send one image"),
    ({"json": {"image": "@@@"}}, 400, "base64"),
    ({"json": {"image": b64(b"not an image")}}, 422, "image 0"),
    ({"json": {"image": b64(png(grey_with_patch())), "model": "nope"}}, 404, "nope"),
    ({"json": {"image": b64(png(grey_with_patch())), "resolution": [30, 30]}}, 422, "multiple"),
    ({"content": b"raw", "headers": {"Content-Type": "image/png"}}, 415, "content type"),
    ({"files": [("image", ("a.png", b"x", "image/png")), ("image", ("b.png", b"y", "image/png"))]}, 422, "one 'image' part"),
    ({"files": {"picture": ("a.png", b"x", "image/png")}}, 422, "unknown form fields"),
])
def test_errors_are_json_never_png(client, kwargs, status, fragment):
    headers = {"Accept": "image/png", **kwargs.pop("headers", {})}
    response = client.post("/visualize", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]["message"]
