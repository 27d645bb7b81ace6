"""/ points to /docs; /docs and /redoc load every asset from the service itself (they work offline)."""

from __future__ import annotations

import re

import pytest


def test_root_redirects_to_the_docs(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/docs"


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_doc_pages_reference_only_local_assets_that_are_served(client, page, script):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"""url:\s*["']([^"']+)["']""", html)
    assert urls, html
    remote = [u for u in urls if re.match(r"^(https?:)?//", u)]
    assert not remote, f"{page} loads {remote} from the network"
    assert "googleapis" not in html and "cdn." not in html
    assert any(u.endswith(script) for u in urls)
    for url in urls:
        if url.startswith("/docs-assets/"):
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
    spec_url = re.search(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']*openapi\.json)["']""", html).group(1)
    assert client.get(spec_url).json()["info"]["title"] == "sinder feature service"
