"""/docs and /redoc work offline: their pages name only same-origin URLs, and the scripts and
styles they name are served from the package, behind the same API-key rule as /docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from starlette.testclient import TestClient

from vlserve.api.app import create_app
from vlserve.settings import Settings

PAGES = ("/docs", "/redoc")
KINDS = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client(tmp_path):
    clients = []

    def make(**settings):
        app = create_app(Settings(model_repo=tmp_path, **settings))  # no lifespan: no model loads
        clients.append(app)
        return TestClient(app)

    yield make
    for app in clients:
        app.state.gateway.close()


@pytest.mark.parametrize("page", PAGES)
def test_pages_name_only_same_origin_urls_and_those_are_served(client, page):
    http = client()
    r = http.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.findall(r"(?:https?:)?//[\w.-]+", r.text.replace("window.location.origin", "")), \
        "a URL to another host"
    urls = links(r.text)
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = http.get(url)
        assert asset.status_code == 200, url
        kind = next(k for suffix, k in KINDS.items() if url.endswith(suffix))
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url


def test_the_links_check_can_fail():
    assert links('<script src="https://cdn.example/x.js"></script><link href="/a.css">') == \
        ["https://cdn.example/x.js", "/a.css"]


def test_swagger_ui_oauth2_redirect_is_served(client):
    r = client().get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def test_docs_pages_are_not_in_the_openapi_document(client):
    paths = client().get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


@pytest.mark.parametrize("open_docs", [False, True])
def test_assets_follow_the_api_key_rule_of_docs(client, open_docs):
    http = client(api_key="s3cret", auth_metrics_and_docs=not open_docs)
    paths = ("/docs", "/redoc", "/docs/oauth2-redirect", "/docs/assets/swagger-ui-bundle.js",
             "/docs/assets/swagger-ui.css", "/docs/assets/redoc.standalone.js")
    for path in paths:
        assert http.get(path).status_code == (200 if open_docs else 401), path
        assert http.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 200, path
    assert http.get("/docs/assetsX/swagger-ui.css").status_code == 401  # the prefix, not any look-alike


def test_assets_are_served_while_draining_like_docs(client):
    http = client()
    http.app.state.gateway.draining = True
    for path in ("/docs", "/docs/assets/swagger-ui.css"):
        assert http.get(path).status_code == 200, path
    assert http.post("/v1/caption", json={}).status_code == 503
