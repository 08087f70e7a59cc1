"""Turning the images a caller has into what the wire carries: base64 strings, or URLs.

An image may be a path (str or os.PathLike), bytes, a binary file object, a PIL.Image, or
an http(s) URL. URLs are downloaded here and sent as bytes, because a server only fetches
URLs when its operator allows it; with `send_urls=True` they go to the server as they are.
A `data:` URI is sent unchanged.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from typing import IO, Any, Union

import httpx

from ._exceptions import ImageFetchError

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Any]  # Any: PIL.Image
MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Remote:
    """A URL the client still has to download."""

    url: str


def is_url(image: object) -> bool:
    return isinstance(image, str) and image.startswith(("http://", "https://"))


def as_list(images: Any) -> list:
    """A list or tuple holds many images; anything else is one."""
    return list(images) if isinstance(images, (list, tuple)) else [images]


def to_wire(image: ImageInput, send_urls: bool) -> str | Remote:
    if is_url(image):
        return image if send_urls else Remote(image)
    if isinstance(image, str) and image.startswith("data:"):
        return image
    return base64.b64encode(read_image(image)).decode("ascii")


def read_image(image: ImageInput) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError("image file objects must be opened in binary mode ('rb')")
        return data
    if _is_pil(image):
        return _pil_bytes(image)
    raise TypeError(f"cannot send {type(image).__name__} as an image: give a path, bytes, "
                    "a binary file, a PIL.Image or a URL")


def _is_pil(image: object) -> bool:
    # no import: Pillow is optional, and an Image can only exist if it was imported already
    return type(image).__module__.startswith("PIL.") and hasattr(image, "save") and hasattr(image, "mode")


def _pil_bytes(image: Any) -> bytes:
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16"):
        image = image.convert("RGB")  # PNG cannot hold CMYK, YCbCr, …
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # lossless: the server sees the pixels the caller has
    return buf.getvalue()


def _check(url: str, response: httpx.Response) -> None:
    if response.status_code != 200:
        raise ImageFetchError(url, f"HTTP {response.status_code}")


def _grow(url: str, data: bytearray, chunk: bytes) -> None:
    data += chunk
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageFetchError(url, f"larger than {MAX_DOWNLOAD_BYTES} bytes")


# A plain httpx client of its own: the API key must never travel to other hosts.
def download(url: str, timeout: float) -> str:
    data = bytearray()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as r:
            _check(url, r)
            for chunk in r.iter_bytes():
                _grow(url, data, chunk)
    except httpx.HTTPError as exc:
        raise ImageFetchError(url, str(exc) or type(exc).__name__) from exc
    return base64.b64encode(data).decode("ascii")


async def adownload(url: str, timeout: float) -> str:
    data = bytearray()
    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as http:
            async with http.stream("GET", url) as r:
                _check(url, r)
                async for chunk in r.aiter_bytes():
                    _grow(url, data, chunk)
    except httpx.HTTPError as exc:
        raise ImageFetchError(url, str(exc) or type(exc).__name__) from exc
    return base64.b64encode(data).decode("ascii")
