"""Fetching image URLs, off unless enabled: only allow-listed hosts, no credentials in the
URL, never private, loopback, link-local or otherwise internal addresses (IPv6 forms that
embed an IPv4 address are judged by that address; checked after DNS resolution and again
on every redirect, and the connection goes to the checked address), with a size limit and
one time limit over the whole fetch (DNS, every redirect hop and the body together)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from ..errors import InvalidInputError, PayloadTooLargeError
from ..settings import Settings

MAX_REDIRECTS = 3
_REDIRECT_CODES = (301, 302, 303, 307, 308)


def _low32(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    return (ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF),)


# IPv6 forms that reach an IPv4 host, and where that host's address sits. Python's own
# is_global misjudges several of them (::7f00:1 and 64:ff9b::a9fe:a9fe count as global).
_EMBEDDED_IPV4 = (
    (ipaddress.ip_network("::ffff:0:0/96"), _low32),               # IPv4-mapped
    (ipaddress.ip_network("::/96"), _low32),                       # IPv4-compatible (also :: and ::1)
    (ipaddress.ip_network("64:ff9b::/96"), _low32),                # NAT64, well-known prefix
    (ipaddress.ip_network("2002::/16"), lambda a: (a.sixtofour,)),  # 6to4, bits 16..48
    (ipaddress.ip_network("2001::/32"), lambda a: a.teredo),        # Teredo: server and client
)
# Local-use NAT64 lets each network choose where in the address the IPv4 sits (RFC 6052,
# /32 to /96), so its embedded address cannot be told reliably: refuse the whole prefix.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
# is_global alone lets multicast (224.0.0.1, ff02::1) and site-local (fec0::/10) through.
_NOT_PUBLIC = ("is_multicast", "is_loopback", "is_private", "is_link_local", "is_reserved",
               "is_unspecified", "is_site_local")


def _public(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        if addr in _LOCAL_NAT64:
            return False
        for network, embedded in _EMBEDDED_IPV4:
            if addr in network:
                return all(_public(v4) for v4 in embedded(addr))
    return addr.is_global and not any(getattr(addr, flag, False) for flag in _NOT_PUBLIC)


def _target(url: str, settings: Settings, param: str) -> tuple[SplitResult, str, int | None]:
    """Checks a URL before anything is resolved or sent; returns its parts, host and explicit port."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise InvalidInputError("unsupported image URL", param=param) from None
    if "@" in parts.netloc:
        # Userinfo would leak into the Host header and to the image host; the message
        # leaves the URL out so that the credentials do not end up in logs either.
        raise InvalidInputError("image URLs must not carry credentials", param=param)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(f"unsupported image URL '{url}'", param=param)
    if host not in settings.allowed_hosts:
        raise InvalidInputError(f"host '{host}' is not on the allow-list", param=param)
    try:
        port = parts.port
    except ValueError:
        raise InvalidInputError(f"unsupported image URL '{url}' (bad port)", param=param) from None
    return parts, host, port


def _host_header(host: str, port: int | None, default_port: int) -> str:
    # Built from the checked host name, never the raw netloc (case, userinfo, default port).
    name = f"[{host}]" if ":" in host else host
    return name if port in (None, default_port) else f"{name}:{port}"


async def _resolve(host: str, port: int, param: str) -> str:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:  # an allow-listed name can still fail to resolve: the client's error, not a 500
        raise InvalidInputError(f"cannot resolve host '{host}'", param=param) from None
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(_public(a) for a in addresses):
        raise InvalidInputError(f"host '{host}' resolves to a non-public address", param=param)
    return sorted(addresses)[0]


async def fetch_image(url: str, settings: Settings, param: str, transport: httpx.AsyncBaseTransport | None = None):
    if not settings.allow_url_fetch:
        raise InvalidInputError("image URLs are not accepted by this server (send base64 or a data: URI)",
                                param=param)
    try:
        # One deadline for everything: a limit per step would let slow DNS or a chain of
        # slow redirects hold the request several times longer than the setting says.
        async with asyncio.timeout(settings.url_timeout_s):
            return await _fetch(url, settings, param, transport)
    except TimeoutError:
        raise InvalidInputError(f"fetching '{url}' exceeded the time limit of {settings.url_timeout_s:g} s",
                                param=param) from None


async def _fetch(url: str, settings: Settings, param: str, transport: httpx.AsyncBaseTransport | None) -> bytes:
    # No httpx timeout: the single deadline in fetch_image bounds every operation.
    async with httpx.AsyncClient(timeout=None, follow_redirects=False, transport=transport) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts, host, port = _target(url, settings, param)
            default_port = 443 if parts.scheme == "https" else 80
            connect_port = default_port if port is None else port
            ip = await _resolve(host, connect_port, param)
            pinned = parts._replace(netloc=f"[{ip}]:{connect_port}" if ":" in ip else f"{ip}:{connect_port}")
            headers = {"Host": _host_header(host, port, default_port)}
            try:
                async with client.stream("GET", pinned.geturl(), headers=headers,
                                         extensions={"sni_hostname": host}) as resp:
                    if resp.status_code in _REDIRECT_CODES:
                        location = resp.headers.get("location", "").strip()
                        if not location:
                            raise InvalidInputError(f"'{url}' redirected (HTTP {resp.status_code}) without a Location",
                                                    param=param)
                        try:
                            url = urljoin(url, location)
                        except ValueError:
                            raise InvalidInputError(f"'{url}' redirected to an invalid URL", param=param) from None
                        continue
                    if resp.status_code != 200:
                        raise InvalidInputError(f"fetching '{url}' gave HTTP {resp.status_code}", param=param)
                    data = bytearray()
                    async for chunk in resp.aiter_bytes():
                        data += chunk
                        if len(data) > settings.url_max_bytes:
                            raise PayloadTooLargeError(f"'{url}' is larger than {settings.url_max_bytes} bytes",
                                                       param=param)
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise InvalidInputError(f"fetching '{url}' failed: {type(exc).__name__}", param=param) from None
    raise InvalidInputError(f"'{url}' redirects more than {MAX_REDIRECTS} times", param=param)
