"""Image URL fetching: off by default, allow-listed hosts only, no internal addresses
(after DNS and on every redirect), size limit; the connection goes to the checked address."""

import socket

import httpx
import pytest

from vlserve.api import fetch
from vlserve.errors import InvalidInputError, PayloadTooLargeError
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
ON = Settings(allow_url_fetch=True, url_allow_hosts="img.example.com, cdn.example.com", url_max_bytes=1000)
ADDRESSES = {"img.example.com": "93.184.216.34", "cdn.example.com": "93.184.216.35",
             "evil.example.com": "127.0.0.1", "meta.example.com": "169.254.169.254"}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    async def getaddrinfo(self, host, port, **kw):
        if host not in ADDRESSES:
            raise socket.gaierror("unknown host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ADDRESSES[host], port))]

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)


def transport(routes: dict, seen: list):
    def handle(request: httpx.Request):
        seen.append((str(request.url), request.headers["host"]))
        return routes[request.headers["host"]]
    return httpx.MockTransport(handle)


async def test_disabled_by_default():
    with pytest.raises(InvalidInputError, match="not accepted"):
        await fetch.fetch_image("https://img.example.com/a.png", Settings(), "images[0]")


async def test_allowed_host_is_fetched_from_the_checked_address():
    seen = []
    t = transport({"img.example.com": httpx.Response(200, content=b"PNGDATA")}, seen)
    assert await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", t) == b"PNGDATA"
    assert seen == [("http://93.184.216.34/a.png", "img.example.com")]


@pytest.mark.parametrize("url,why", [
    ("http://other.example.org/a.png", "allow-list"),
    ("ftp://img.example.com/a.png", "unsupported"),
])
async def test_refused_urls(url, why):
    with pytest.raises(InvalidInputError, match=why):
        await fetch.fetch_image(url, ON, "images[0]", transport({}, []))


async def test_private_address_is_refused(monkeypatch):
    settings = Settings(allow_url_fetch=True, url_allow_hosts="evil.example.com")
    with pytest.raises(InvalidInputError, match="non-public"):
        await fetch.fetch_image("http://evil.example.com/a.png", settings, "images[0]", transport({}, []))


@pytest.mark.parametrize("target,why", [
    ("http://other.example.org/x.png", "allow-list"),
    ("http://meta.example.com/latest", "allow-list"),
])
async def test_redirects_are_checked_again(target, why):
    t = transport({"img.example.com": httpx.Response(302, headers={"location": target})}, [])
    with pytest.raises(InvalidInputError, match=why):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", t)


async def test_redirect_to_an_allowed_host_with_an_internal_address():
    settings = Settings(allow_url_fetch=True, url_allow_hosts="img.example.com,meta.example.com")
    t = transport({"img.example.com": httpx.Response(302, headers={"location": "http://meta.example.com/x"})}, [])
    with pytest.raises(InvalidInputError, match="non-public"):
        await fetch.fetch_image("http://img.example.com/a.png", settings, "images[0]", t)


async def test_redirect_loop_and_size_limit():
    loop = transport({"img.example.com": httpx.Response(302, headers={"location": "/again"})}, [])
    with pytest.raises(InvalidInputError, match="redirects"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", loop)
    big = transport({"img.example.com": httpx.Response(200, content=b"x" * 5000)}, [])
    with pytest.raises(PayloadTooLargeError):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", big)
