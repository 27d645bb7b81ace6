"""POST /features end to end on the tiny ONNX models: order, encodings, outputs, diagnostics, models, resize."""

from __future__ import annotations

import numpy as np
import pytest
from service_test_utils import b64, decode_array, grey_with_patch, noise, png

import tiny_repo
from service.backends.fake import FakeBackend


def post(client, images, **options):
    return client.post("/features", json={"images": [b64(png(a)) for a in images], **options})


def test_results_come_back_in_request_order_each_matching_its_own_image(client):
    images = [noise(56, 56, seed) for seed in range(5)]
    batch = post(client, images, model="tiny", outputs=["cls", "patch_tokens"])
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["model"] == "tiny" and body["model_version"] == 1
    assert [r["index"] for r in body["results"]] == list(range(5))
    for image, result in zip(images, body["results"]):
        alone = post(client, [image], model="tiny", outputs=["cls", "patch_tokens"]).json()["results"][0]
        np.testing.assert_allclose(decode_array(result["cls"]), decode_array(alone["cls"]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decode_array(result["patch_tokens"]), decode_array(alone["patch_tokens"]), rtol=1e-5, atol=1e-6)


def test_defaults_give_cls_pooled_patch_tokens_diagnostics_and_timing(client):
    result = post(client, [noise(56, 84)], model="tiny").json()["results"][0]
    assert result["grid"] == [4, 6]
    cls, pooled, tokens = (decode_array(result[k]) for k in ("cls", "pooled", "patch_tokens"))
    assert cls.shape == (8,) and pooled.shape == (8,) and tokens.shape == (4, 6, 8)
    assert result["cls"]["dtype"] == "float32"
    np.testing.assert_allclose(pooled, tokens.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    assert set(result["diagnostics"]) == {"defect_tokens", "defect_fraction", "max_median_norm_ratio"}
    assert result["timing"]["queue_ms"] >= 0 and result["timing"]["inference_ms"] > 0
    assert result["timing"]["batch_size"] == 1


def test_json_and_base64_and_float16_encode_the_same_numbers(client):
    image = [noise(56, 56, 3)]
    as_b64 = post(client, image, model="tiny", outputs=["patch_tokens"]).json()["results"][0]["patch_tokens"]
    as_json = post(client, image, model="tiny", outputs=["patch_tokens"], encoding="json").json()["results"][0]["patch_tokens"]
    as_f16 = post(client, image, model="tiny", outputs=["patch_tokens"], dtype="float16").json()["results"][0]["patch_tokens"]
    ref = decode_array(as_b64)
    assert isinstance(as_json, list)
    np.testing.assert_allclose(np.array(as_json, np.float32), ref, rtol=1e-6)
    assert as_f16["dtype"] == "float16"
    np.testing.assert_allclose(decode_array(as_f16).astype(np.float32), ref, rtol=2e-3, atol=2e-3)


def test_a_planted_bright_patch_is_the_one_defect_token(client):
    image = grey_with_patch(56, 84, at=(2, 3))
    result = post(client, [image], model="tiny", outputs=["diagnostics"], diagnostics_maps=True,
                  resize="native").json()["results"][0]
    diag = result["diagnostics"]
    assert diag["defect_tokens"] == 1
    assert diag["defect_fraction"] == pytest.approx(1 / 24)
    mask = decode_array(diag["mask"])
    assert mask.dtype == np.bool_ and mask.shape == (4, 6)
    assert list(zip(*np.nonzero(mask))) == [(2, 3)]
    norms = decode_array(diag["norms"])
    assert diag["max_median_norm_ratio"] == pytest.approx(norms.max() / np.median(norms), rel=1e-5)
    assert decode_array(diag["alignment"]).argmax() == 2 * 6 + 3


def test_multipart_upload_matches_json(client):
    images = [noise(56, 56, 10), noise(70, 56, 11)]
    files = [("images", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(images)]
    form = client.post("/features", files=files, data={"model": "tiny", "outputs": "cls,diagnostics", "encoding": "json"})
    assert form.status_code == 200, form.text
    as_json = post(client, images, model="tiny", outputs=["cls", "diagnostics"], encoding="json")
    assert [r["grid"] for r in form.json()["results"]] == [r["grid"] for r in as_json.json()["results"]]
    for a, b in zip(form.json()["results"], as_json.json()["results"]):
        np.testing.assert_allclose(a["cls"], b["cls"], rtol=1e-6)
        assert "patch_tokens" not in a


def test_multipart_accepts_repeated_outputs_resolution_and_base64_text_parts(client):
    data = b64(png(noise(40, 40)))
    boundary = "XyZ"
    parts = [("images", data), ("model", "tiny:1"), ("outputs", "cls"), ("outputs", "pooled"), ("resolution", "28,42")]
    body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n" for k, v in parts)
    body += f"--{boundary}--\r\n"
    response = client.post("/features", content=body.encode(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["grid"] == [2, 3] and set(result) >= {"cls", "pooled"} and "patch_tokens" not in result


def test_model_selection_by_name_version_and_object_and_default(client):
    image = [noise(56, 56)]
    assert post(client, image).json()["model"] == "tiny_sinder"  # the repaired model is the default
    assert post(client, image, model="tiny:1").json()["model"] == "tiny"
    body = post(client, image, model={"name": "tiny_reg", "version": 1}).json()
    assert (body["model"], body["model_version"]) == ("tiny_reg", 1)
    a = decode_array(post(client, image, model="tiny", outputs=["cls"]).json()["results"][0]["cls"])
    b = decode_array(post(client, image, model="tiny_sinder", outputs=["cls"]).json()["results"][0]["cls"])
    assert not np.allclose(a, b)  # different weights really ran


def test_registers_only_where_the_model_has_them(client):
    ok = post(client, [noise(56, 56)], model="tiny_reg", outputs=["registers"])
    assert decode_array(ok.json()["results"][0]["registers"]).shape == (2, 8)
    missing = post(client, [noise(56, 56)], model="tiny", outputs=["registers"])
    assert missing.status_code == 422 and "register" in missing.json()["error"]["message"]


@pytest.mark.parametrize(("size", "options", "grid"), [
    ((100, 200), {}, [4, 8]),  # keep_aspect, short side 56 from the manifest
    ((100, 200), {"short_side": 112}, [8, 16]),
    ((100, 200), {"resize": "native"}, [7, 14]),
    ((100, 200), {"resolution": [42, 28]}, [3, 2]),
    ((100, 200), {"resize": "stretch", "resolution": [28, 28]}, [2, 2]),
    ((10, 2000), {}, [4, 16]),  # long side bounded by max_side 224, short side raised to min_side 28 then rounded
])
def test_resize_options_set_the_grid(client, size, options, grid):
    response = post(client, [noise(*size)], model="tiny", outputs=["cls"], **options)
    assert response.status_code == 200, response.text
    got = response.json()["results"][0]["grid"]
    if size == (10, 2000):
        assert got[1] == 16 and 2 <= got[0] <= 4
    else:
        assert got == grid


def test_highest_version_is_served_by_default(make_client, tmp_path):
    tiny_repo.write_model(tmp_path, "m", 1, seed=1)
    tiny_repo.write_model(tmp_path, "m", 2, seed=2)
    client = make_client(repo=tmp_path)
    image = [noise(56, 56)]
    assert post(client, image, model="m").json()["model_version"] == 2
    assert post(client, image, model="m:1").json()["model_version"] == 1
    assert post(client, image, model="m:3").status_code == 404


def test_version_policy_latest_loads_only_the_highest(make_client, tmp_path):
    tiny_repo.write_model(tmp_path, "m", 1)
    tiny_repo.write_model(tmp_path, "m", 2)
    client = make_client(repo=tmp_path, version_policy="latest")
    assert [m["version"] for m in client.get("/models").json()["models"]] == [2]


def test_fp16_model_serves_float32_or_float16(make_client, tmp_path):
    tiny_repo.write_model(tmp_path, "half", 1, fp16=True)
    client = make_client(repo=tmp_path)
    for dtype in ("float32", "float16"):
        result = post(client, [noise(56, 56)], outputs=["patch_tokens", "pooled"], dtype=dtype).json()["results"][0]
        assert result["patch_tokens"]["dtype"] == dtype
        assert np.isfinite(decode_array(result["pooled"])).all()


class _NoDiagnostics(FakeBackend):
    @property
    def outputs(self):
        return [o for o in super().outputs if o.name in ("cls_token", "patch_tokens")]

    def run(self, images):
        out = super().run(images)
        return {"cls_token": out["cls_token"], "patch_tokens": out["patch_tokens"]}


def test_default_outputs_leave_out_what_the_model_lacks(make_client):
    client = make_client(backend_factory=lambda p: _NoDiagnostics(dim=8), models=["tiny"])
    result = post(client, [noise(56, 56)]).json()["results"][0]
    assert {"cls", "pooled", "patch_tokens"} <= set(result) and "diagnostics" not in result
    asked = post(client, [noise(56, 56)], outputs=["diagnostics"])
    assert asked.status_code == 422 and "diagnostic" in asked.json()["error"]["message"]
