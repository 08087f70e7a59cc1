"""Bulk helpers: input order, per-item failures, bounded concurrency, lazy input, progress."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import threading
import time

import httpx
import pytest

import vlserve_client as vc
from tests.client.conftest import BLUE, RED, sdk


class Counting:
    """A mock server that captions image i as "image <first byte>" and tracks the most
    requests it held at once; an image starting with 'x' is refused with 415."""

    def __init__(self, delay=0.02):
        self.delay, self.now, self.most, self.lock = delay, 0, 0, threading.Lock()

    def answer(self, request):
        data = base64.b64decode(json.loads(request.content)["images"][0])
        if data.startswith(b"x"):
            return httpx.Response(415, json={"error": {"type": "invalid_image", "message": "no", "param": "images[0]"}})
        return httpx.Response(200, json={"model": "m", "usage": {"images": 1, "generated_tokens": 1},
                                         "captions": [[{"text": f"image {data[0]}", "tokens": [1], "logprob": 0}]]})

    def enter(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1

    def sync(self, request):
        self.enter()
        time.sleep(self.delay)
        self.leave()
        return self.answer(request)

    async def asynchronous(self, request):
        self.enter()
        await asyncio.sleep(self.delay)
        self.leave()
        return self.answer(request)


def items(n, bad=()):
    """A generator: the helpers must not need a list."""
    for i in range(n):
        yield b"x" if i in bad else bytes([i])


def check(results, n, bad):
    assert [r.index for r in results] == list(range(n))
    for r in results:
        if r.index in bad:
            assert not r.ok and isinstance(r.error, vc.UnsupportedMediaTypeError) and r.value is None
        else:
            assert r.ok and r.value[0].text == f"image {r.index}"


def test_sync_order_failures_and_concurrency():
    server = Counting()
    client = vc.Client("http://vl", transport=httpx.MockTransport(server.sync))
    results = client.caption_many(items(12, bad={3, 7}), concurrency=3)
    check(results, 12, {3, 7})
    assert server.most == 3


@pytest.mark.anyio
async def test_async_order_failures_and_concurrency():
    server = Counting()
    async with vc.AsyncClient("http://vl", transport=httpx.MockTransport(server.asynchronous)) as client:
        results = await client.caption_many(items(10, bad={0, 9}), concurrency=4)
    check(results, 10, {0, 9})
    assert server.most == 4


@pytest.mark.anyio
async def test_against_the_real_app(live):
    async with sdk(live) as client:
        caps = await client.caption_many([RED, b"not an image", BLUE], concurrency=2, max_new_tokens=4)
        embs = await client.embed_many(iter([BLUE, RED]), concurrency=2)
        direct = await client.caption([RED, BLUE], max_new_tokens=4)
        both = await client.embed([BLUE, RED])
    assert [c.ok for c in caps] == [True, False, True] and caps[1].error.type == "invalid_image"
    # batched with others or not, an image gets the same caption
    assert [caps[0].value[0].tokens, caps[2].value[0].tokens] == [c[0].tokens for c in direct.captions]
    for got, want in zip([e.value for e in embs], both.image_embeddings, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_progress_bar(capsys):
    client = vc.Client("http://vl", transport=httpx.MockTransport(Counting(0).sync))
    client.caption_many([b"a", b"b"], progress=True)
    assert "2/2" in capsys.readouterr().err


def test_progress_without_tqdm_warns_and_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes `from tqdm.auto import …` fail
    client = vc.Client("http://vl", transport=httpx.MockTransport(Counting(0).sync))
    with pytest.warns(UserWarning, match="needs tqdm"):
        assert all(r.ok for r in client.caption_many([b"a"], progress=True))


def test_a_broken_iterable_raises():
    def broken():
        yield b"a"
        raise RuntimeError("disk gone")

    client = vc.Client("http://vl", transport=httpx.MockTransport(Counting(0).sync))
    with pytest.raises(RuntimeError, match="disk gone"):
        client.caption_many(broken(), concurrency=2)
    with pytest.raises(ValueError, match="concurrency"):
        client.caption_many([b"a"], concurrency=0)
