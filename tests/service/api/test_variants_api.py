"""A model family of three (original, SINDER, test-time registers): one /visualize row each, and
/models/{name} lists the family, linked by the manifests' `variant` fields."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tiny_repo
from contract.manifest import TTR, Variant
from PIL import Image
from service_test_utils import b64, grey_with_patch, png


@pytest.fixture(scope="module")
def family_repo(tmp_path_factory):
    repo = tiny_repo.write_repo(tmp_path_factory.mktemp("family"))
    tiny_repo.write_model(repo, "tiny_ttr", 1, seed=2, variant=Variant(kind=TTR, of="tiny"),
                          registers_summary={"neurons": {"0": [3, 5]}, "neuron_count": 2, "verdict": "removed"})
    return repo


def _height(response) -> int:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content))).shape[0]


def test_every_variant_gets_a_row(make_client, family_repo, tiny_repo):
    client = make_client(family_repo)
    image = b64(png(grey_with_patch(56, 84, at=(1, 2))))
    one = _height(client.post("/visualize", json={"image": image, "model": "tiny", "compare": False, "resize": "native"}))
    rows = {name: _height(client.post("/visualize", json={"image": image, "model": name, "resize": "native"}))
            for name in ("tiny", "tiny_sinder", "tiny_ttr")}
    assert len(set(rows.values())) == 1  # the same family from any member
    pair = _height(make_client(tiny_repo).post("/visualize", json={"image": image, "model": "tiny", "resize": "native"}))
    row = pair - one  # each row adds the same height; the legend is drawn once
    assert row > 0 and abs(rows["tiny"] - pair - row) <= 0.1 * row
    alone = _height(client.post("/visualize", json={"image": image, "model": "tiny_reg", "resize": "native"}))
    assert alone == one  # not in the family


def test_model_detail_lists_the_family_in_drawing_order(make_client, family_repo):
    client = make_client(family_repo)
    detail = client.get("/models/tiny_ttr").json()
    assert detail["variant"] == {"name": "tiny_ttr", "version": 1, "kind": "ttr", "of": "tiny"}
    assert [(v["name"], v["kind"]) for v in detail["variants"]] == [
        ("tiny", "original"), ("tiny_sinder", "sinder"), ("tiny_ttr", "ttr")]
    assert detail["registers"]["neurons"] == {"0": [3, 5]} and detail["repair"] is None
    original = client.get("/models/tiny").json()
    assert [v["name"] for v in original["variants"]] == ["tiny", "tiny_sinder", "tiny_ttr"]
    assert [v["name"] for v in client.get("/models/tiny_reg").json()["variants"]] == ["tiny_reg"]


def test_each_row_is_labelled_by_its_variant_model_and_provider(make_client, family_repo, monkeypatch):
    """One bracket per label: the variant's name, then the model and where it ran."""
    from contract import pictures

    drawn = []
    render = pictures.render
    monkeypatch.setattr(pictures, "render", lambda rows, *a: drawn.extend(rows) or render(rows, *a))
    client = make_client(family_repo)
    image = b64(png(grey_with_patch(56, 84, at=(1, 2))))
    assert client.post("/visualize", json={"image": image, "model": "tiny", "resize": "native"}).status_code == 200
    assert [row.label for row in drawn] == [
        "original (tiny:1, on CPU)", "SINDER repair (tiny_sinder:1, on CPU)", "test-time registers (tiny_ttr:1, on CPU)"]
