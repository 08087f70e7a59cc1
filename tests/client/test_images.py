"""Every kind of image a caller may hand over reaches the wire as the right string, and URLs
are downloaded by the client (without the API key) unless it is told to send them."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

import vlserve_client as vc
from tests.client.conftest import RED
from vlserve_client._images import to_wire

B64 = base64.b64encode(RED).decode()


def pixels(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


def test_local_kinds(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    assert to_wire(str(path), False) == to_wire(path, False) == to_wire(RED, False) == B64
    assert to_wire(bytearray(RED), False) == to_wire(memoryview(RED), False) == B64
    with open(path, "rb") as f:
        assert to_wire(f, False) == B64
    assert to_wire("data:image/png;base64," + B64, False) == "data:image/png;base64," + B64


def test_pil_images_travel_losslessly():
    image = Image.new("RGB", (9, 7), (12, 200, 99))
    assert pixels(to_wire(image, False)).tobytes() == image.tobytes()
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # PNG cannot hold CMYK
    assert pixels(to_wire(cmyk, False)).getpixel((1, 1)) == cmyk.convert("RGB").getpixel((1, 1))


def test_bad_images_fail_like_python(tmp_path):
    with pytest.raises(TypeError, match="binary mode"):
        with open(tmp_path / "t.txt", "w+") as f:
            to_wire(f, False)
    with pytest.raises(TypeError, match="cannot send int"):
        to_wire(3, False)
    with pytest.raises(FileNotFoundError):
        to_wire(tmp_path / "missing.png", False)


class ImageHost:
    """A loopback HTTP server with one image, remembering the headers it was sent."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(dict(self.headers))
                ok = self.path == "/red.png"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(RED) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(RED)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host():
    h = ImageHost()
    yield h
    h.close()


def capture():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"model": "m", "dim": 1, "image_embeddings": [[1.0]]})
    return bodies, handler


def test_urls_are_downloaded_without_the_api_key(host):
    bodies, handler = capture()
    client = vc.Client("http://vl", api_key="secret", transport=httpx.MockTransport(handler))
    client.embed(images=host.url + "/red.png")
    assert bodies[0]["images"] == [B64]
    assert host.seen and all("Authorization" not in h for h in host.seen)
    with pytest.raises(vc.ImageFetchError, match="HTTP 404"):
        client.embed(images=host.url + "/gone.png")


@pytest.mark.anyio
async def test_async_download(host):
    bodies, handler = capture()
    async with vc.AsyncClient("http://vl", transport=httpx.MockTransport(handler)) as client:
        await client.embed(images=[host.url + "/red.png", RED])
    assert bodies[0]["images"] == [B64, B64]


def test_send_urls_passes_them_through(host):
    bodies, handler = capture()
    vc.Client("http://vl", send_urls=True, transport=httpx.MockTransport(handler)).embed(
        images=[host.url + "/red.png", Path(__file__)])
    assert bodies[0]["images"][0] == host.url + "/red.png" and not host.seen
