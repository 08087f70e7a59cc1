"""Image URL fetching: off by default, allow-listed hosts only, no credentials, no internal
addresses (after DNS and on every redirect, IPv4 embedded in IPv6 included), size limit, one
time limit over the whole fetch; the connection goes to the checked address."""

import asyncio
import ipaddress
import socket
import time

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
        try:
            address = str(ipaddress.ip_address(host))  # numeric hosts resolve to themselves
        except ValueError:
            if host not in ADDRESSES:
                raise socket.gaierror("unknown host") from None
            address = ADDRESSES[host]
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)


def transport(routes: dict, seen: list):
    def handle(request: httpx.Request):
        seen.append((str(request.url), request.headers["host"]))
        return routes[request.headers["host"]]
    return httpx.MockTransport(handle)


def recorder(seen: list, content=b"PNGDATA"):
    def handle(request: httpx.Request):
        seen.append((str(request.url), request.headers["host"]))
        return httpx.Response(200, content=content)
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
    ("http://img.example.com:99999/a.png", "bad port"),
    ("http://img.example.com:abc/a.png", "bad port"),
    ("http://[::1/a.png", "unsupported"),
    ("http://[::1]/a.png", "allow-list"),
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


# Teredo addresses below: 2001:0:<server>:<flags, port>:<client XOR ffffffff>
NON_PUBLIC = [
    "127.0.0.1", "10.0.0.1", "0.0.0.0", "100.64.0.1", "169.254.169.254", "224.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fc00::1", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",   # IPv4-mapped
    "::7f00:1", "::a9fe:a9fe", "::10.0.0.1",                          # IPv4-compatible
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",                          # NAT64
    "64:ff9b:1::a9fe:a9fe", "64:ff9b:1::5db8:d822",                   # local-use NAT64: refused whole
    "2002:a9fe:a9fe::1", "2002:7f00:1::1", "2002:a00:1::1",           # 6to4
    "2001:0:a9fe:a9fe::a247:27dd",                                    # Teredo, server 169.254.169.254
    "2001:0:5db8:d822::80ff:fffe",                                    # Teredo, client 127.0.0.1
]
PUBLIC = ["93.184.216.34", "2606:4700::1111", "64:ff9b::5db8:d822", "::ffff:93.184.216.34",
          "2002:5db8:d822::1", "2001:0:5db8:d822::a247:27dd"]


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_non_public_addresses_are_refused(address, monkeypatch):
    monkeypatch.setitem(ADDRESSES, "img.example.com", address)
    with pytest.raises(InvalidInputError, match="non-public"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", recorder([]))


@pytest.mark.parametrize("address", PUBLIC)
async def test_public_addresses_are_fetched(address, monkeypatch):
    monkeypatch.setitem(ADDRESSES, "img.example.com", address)
    seen = []
    assert await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", recorder(seen)) == b"PNGDATA"
    [(url, host)] = seen
    assert ipaddress.ip_address(httpx.URL(url).host) == ipaddress.ip_address(address)
    assert host == "img.example.com"


@pytest.mark.parametrize("url", ["http://u:p@img.example.com/a.png", "http://u@img.example.com/a.png",
                                 "http://@img.example.com/a.png", "ftp://u:secret@img.example.com/a.png"])
async def test_urls_with_credentials_are_refused(url):
    with pytest.raises(InvalidInputError, match="must not carry credentials") as info:
        await fetch.fetch_image(url, ON, "images[0]", recorder([]))
    assert "u:" not in info.value.message and "secret" not in info.value.message


async def test_redirect_to_a_url_with_credentials_is_refused():
    t = transport({"img.example.com": httpx.Response(302, headers={"location": "http://u:p@cdn.example.com/"})}, [])
    with pytest.raises(InvalidInputError, match="must not carry credentials"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", t)


@pytest.mark.parametrize("url,sent", [
    ("http://IMG.Example.COM/a.png", ("http://93.184.216.34/a.png", "img.example.com")),
    ("http://img.example.com:80/a.png", ("http://93.184.216.34/a.png", "img.example.com")),
    ("https://img.example.com:443/a.png", ("https://93.184.216.34/a.png", "img.example.com")),
    ("http://img.example.com:8080/a.png", ("http://93.184.216.34:8080/a.png", "img.example.com:8080")),
    ("https://img.example.com:80/a.png", ("https://93.184.216.34:80/a.png", "img.example.com:80")),
])
async def test_host_header_is_the_parsed_host_and_explicit_port(url, sent):
    seen = []
    await fetch.fetch_image(url, ON, "images[0]", recorder(seen))
    assert seen == [sent]


async def test_ipv6_literal_hosts():
    settings = Settings(allow_url_fetch=True, url_allow_hosts="::1, 2606:4700::1111")
    with pytest.raises(InvalidInputError, match="non-public"):
        await fetch.fetch_image("http://[::1]/x", settings, "images[0]", recorder([]))
    seen = []
    await fetch.fetch_image("http://[2606:4700::1111]:8080/x", settings, "images[0]", recorder(seen))
    assert seen == [("http://[2606:4700::1111]:8080/x", "[2606:4700::1111]:8080")]
    seen.clear()
    await fetch.fetch_image("http://[2606:4700::1111]/x", settings, "images[0]", recorder(seen))
    assert seen == [("http://[2606:4700::1111]/x", "[2606:4700::1111]")]


@pytest.mark.parametrize("error", [socket.gaierror("unknown host"), OSError("network is unreachable")])
async def test_allowed_host_that_does_not_resolve(error, monkeypatch):
    async def getaddrinfo(self, host, port, **kw):
        raise error

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", getaddrinfo)
    with pytest.raises(InvalidInputError, match="cannot resolve host 'img.example.com'"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", recorder([]))


@pytest.mark.parametrize("headers", [{}, {"location": ""}, {"location": "  "}])
async def test_redirect_without_a_location(headers):
    t = transport({"img.example.com": httpx.Response(302, headers=headers)}, [])
    with pytest.raises(InvalidInputError, match="without a Location"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", t)


async def test_other_3xx_is_not_followed():
    t = transport({"img.example.com": httpx.Response(304)}, [])
    with pytest.raises(InvalidInputError, match="HTTP 304"):
        await fetch.fetch_image("http://img.example.com/a.png", ON, "images[0]", t)


def limited(seconds: float) -> Settings:
    return Settings(allow_url_fetch=True, url_allow_hosts="img.example.com", url_timeout_s=seconds)


async def test_time_limit_covers_dns(monkeypatch):
    async def slow_getaddrinfo(self, host, port, **kw):
        await asyncio.sleep(3)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", slow_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(InvalidInputError, match="'http://img.example.com/a.png' exceeded the time limit"):
        await fetch.fetch_image("http://img.example.com/a.png", limited(0.3), "images[0]", recorder([]))
    assert time.monotonic() - start < 1.5


def slow_redirects(hop_s: float):
    """Three redirects and then the image, each hop taking hop_s."""
    async def handle(request: httpx.Request):
        await asyncio.sleep(hop_s)
        hop = int(request.url.path.removeprefix("/hop"))
        if hop < 3:
            return httpx.Response(302, headers={"location": f"/hop{hop + 1}"})
        return httpx.Response(200, content=b"PNGDATA")
    return httpx.MockTransport(handle)


async def test_time_limit_covers_all_redirect_hops_together():
    # every hop (0.1 s) is well under the limit, all four together (0.4 s) are not
    with pytest.raises(InvalidInputError, match="exceeded the time limit"):
        await fetch.fetch_image("http://img.example.com/hop0", limited(0.3), "images[0]", slow_redirects(0.1))
    assert await fetch.fetch_image("http://img.example.com/hop0", limited(2.0), "images[0]", slow_redirects(0.1)) \
        == b"PNGDATA"
