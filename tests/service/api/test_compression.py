"""Request bodies with Content-Encoding gzip or deflate: inflated within the body limit, zip bombs refused."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from service_test_utils import b64, noise, png

from service.api import compression
from service.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

DATA = b"some request body " * 1000


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize("coding, packed", [
    ("gzip", gzip.compress(DATA)),
    ("deflate", zlib.compress(DATA)),  # HTTP's "deflate" is the zlib format
    ("deflate", raw_deflate(DATA)),  # which some clients send without its wrapper
    ("gzip", gzip.compress(DATA[:500]) + gzip.compress(DATA[500:])),  # two gzip members, one after the other
])
def test_gzip_and_deflate_bodies_are_inflated(coding, packed):
    assert compression.inflate(packed, compression.codings(coding), limit=len(DATA)) == DATA


def test_codings_are_undone_last_first_and_identity_is_nothing():
    assert compression.codings(None) == [] and compression.codings("identity") == []
    assert compression.codings("X-GZIP, identity, deflate") == ["gzip", "deflate"]
    twice = zlib.compress(gzip.compress(DATA))
    assert compression.inflate(twice, ["gzip", "deflate"], limit=len(DATA)) == DATA


def test_unknown_coding_is_415_naming_it():
    with pytest.raises(UnsupportedMediaType, match="'br' is not supported"):
        compression.codings("br")


def test_a_zip_bomb_is_refused_at_the_limit_without_inflating_it_all():
    bomb = gzip.compress(bytes(20_000_000), compresslevel=1)  # 20 MB of zeros in about 90 kB
    with pytest.raises(PayloadTooLarge, match="inflates to more than the limit of 1000000 bytes"):
        compression.inflate(bomb, ["gzip"], limit=1_000_000)


@pytest.mark.parametrize("packed, message", [
    (b"not compressed at all", "not valid gzip"),
    (gzip.compress(DATA)[:-30], "not valid gzip"),  # truncated
    (gzip.compress(DATA) + b"trailing junk", "not valid gzip"),
])
def test_corrupt_or_truncated_gzip_is_400(packed, message):
    with pytest.raises(BadRequest, match=message):
        compression.inflate(packed, ["gzip"], limit=10 * len(DATA))


def test_features_accepts_a_gzipped_json_body(client):
    body = json.dumps({"images": [b64(png(noise(56, 56)))], "model": "tiny", "outputs": ["cls"]}).encode()
    plain = client.post("/features", content=body, headers={"content-type": "application/json"})
    packed = client.post("/features", content=gzip.compress(body),
                         headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert packed.status_code == 200, packed.text
    assert packed.json()["results"][0]["cls"] == plain.json()["results"][0]["cls"]


def test_compressed_bodies_keep_the_limits_and_name_the_problem(client):
    headers = {"content-type": "application/json"}
    bomb = gzip.compress(b'{"images": ["' + b"A" * 3_000_000 + b'"]}')  # inflates past the 2 MB limit
    answer = client.post("/features", content=bomb, headers={**headers, "content-encoding": "gzip"})
    assert answer.status_code == 413 and "inflates to more than" in answer.json()["error"]["message"]
    answer = client.post("/features", content=b'{"images": []}', headers={**headers, "content-encoding": "gzip"})
    assert answer.status_code == 400 and "not valid gzip" in answer.json()["error"]["message"]
    answer = client.post("/features", content=b"{}", headers={**headers, "content-encoding": "br"})
    assert answer.status_code == 415 and "Content-Encoding 'br'" in answer.json()["error"]["message"]
    ok = client.post("/features", json={"images": [b64(png(noise(56, 56)))], "model": "tiny", "outputs": ["cls"]})
    assert ok.status_code == 200
