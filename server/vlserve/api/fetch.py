"""Fetching image URLs, off unless enabled: only allow-listed hosts, never private,
loopback, link-local or otherwise internal addresses (checked after DNS resolution and
again on every redirect, and the connection goes to the checked address), with size and
time limits."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import InvalidInputError, PayloadTooLargeError
from ..settings import Settings

MAX_REDIRECTS = 3


def _public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_global and not addr.is_multicast


async def _resolve(host: str, port: int) -> str:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(_public(a) for a in addresses):
        raise InvalidInputError(f"host '{host}' resolves to a non-public address", param="images")
    return sorted(addresses)[0]


async def fetch_image(url: str, settings: Settings, param: str, transport: httpx.AsyncBaseTransport | None = None):
    if not settings.allow_url_fetch:
        raise InvalidInputError("image URLs are not accepted by this server (send base64 or a data: URI)",
                                param=param)
    async with httpx.AsyncClient(timeout=settings.url_timeout_s, follow_redirects=False,
                                 transport=transport) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            if parts.scheme not in ("http", "https") or not host:
                raise InvalidInputError(f"unsupported image URL '{url}'", param=param)
            if host not in settings.allowed_hosts:
                raise InvalidInputError(f"host '{host}' is not on the allow-list", param=param)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            ip = await _resolve(host, port)
            pinned = parts._replace(netloc=f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}").geturl()
            try:
                async with asyncio.timeout(settings.url_timeout_s):
                    async with client.stream("GET", pinned, headers={"Host": parts.netloc},
                                             extensions={"sni_hostname": host}) as resp:
                        if resp.is_redirect:
                            url = urljoin(url, resp.headers.get("location", ""))
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
            except (httpx.HTTPError, TimeoutError) as exc:
                raise InvalidInputError(f"fetching '{url}' failed: {type(exc).__name__}", param=param) from None
    raise InvalidInputError(f"'{url}' redirects more than {MAX_REDIRECTS} times", param=param)
