"""The image-state cache: keys, the byte-bounded LRU, single-flight, failures, and the
runner encoding only what the cache lacks (issue 18)."""

import asyncio
import time

import pytest
import torch

from vlserve.scheduling.image_cache import ImageStateCache, image_key, states_nbytes
from vlserve.scheduling.runner import ScheduledRunner
from vlserve.scheduling.worker import DeviceWorker, Limits


class Counts:
    def __init__(self):
        self.hits = self.misses = self.evictions = 0
        self.size = (0, 0)

    def cache_hits(self, n):
        self.hits += n

    def cache_misses(self, n):
        self.misses += n

    def cache_evictions(self, n):
        self.evictions += n

    def cache_size(self, nbytes, entries):
        self.size = (nbytes, entries)


class FakeVision:
    """An async encode: states (B, 2, D) from pixels (B, D), every call recorded."""

    def __init__(self, delay=0.0, fail=0):
        self.calls, self.delay, self.fail = [], delay, fail

    async def __call__(self, pixels):
        self.calls.append(pixels.clone())
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("injected vision fault")
        return torch.stack([pixels * 2, pixels + 1], dim=1)


def images(*values, d=4):
    return torch.stack([torch.full((d,), float(v)) for v in values])


def row(nbytes):
    return torch.zeros(1, nbytes // 4)  # float32


async def encode(cache, pixels, vision):
    return await cache.encode(pixels, cache.keys(pixels), vision)


# -- keys ----------------------------------------------------------------------------------

def test_keys_differ_for_different_pixels_shapes_dtypes_and_models():
    x = torch.rand(3, 8, 8)
    y = x.clone()
    y[2, 7, 7] += 1e-6  # one value, in its last bits
    keys = {image_key(x, "m"), image_key(y, "m"), image_key(x.reshape(3, 4, 16), "m"),
            image_key(x.to(torch.float64), "m"), image_key(x, "other"), image_key(x.bfloat16(), "m")}
    assert len(keys) == 6
    assert image_key(x.clone(), "m") == image_key(x, "m")  # the content decides, not the object
    assert image_key(x.transpose(1, 2).contiguous().transpose(1, 2), "m") == image_key(x, "m")  # nor the layout


def test_distinct_images_never_share_an_entry():
    cache, vision = ImageStateCache(1 << 20), FakeVision()
    out = asyncio.run(encode(cache, images(1, 2), vision))
    again = asyncio.run(encode(cache, images(2, 1), vision))
    torch.testing.assert_close(again, out.flip(0), rtol=0, atol=0)
    assert len(cache.entries) == 2 and len(vision.calls) == 1


# -- the byte-bounded LRU --------------------------------------------------------------------

def test_eviction_is_by_bytes_not_entries():
    counts = Counts()
    cache = ImageStateCache(1000, metrics=counts)
    for i in range(10):  # ten small entries fit in 1000 bytes
        cache.put(bytes([i]), row(100))
    assert len(cache.entries) == 10 and cache.bytes == 1000 and counts.evictions == 0
    cache.put(b"big", row(400))  # one large entry pushes out the four oldest small ones
    assert cache.bytes == 1000 and counts.evictions == 4
    assert list(cache.entries) == [bytes([i]) for i in range(4, 10)] + [b"big"]
    cache.put(b"big2", row(400))
    cache.put(b"big3", row(400))  # only two of 400 fit beside nothing else
    assert list(cache.entries) == [b"big2", b"big3"] and cache.bytes == 800
    assert counts.size == (800, 2)


def test_least_recently_used_goes_first():
    cache = ImageStateCache(300)
    for k in (b"a", b"b", b"c"):
        cache.put(k, row(100))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"d", row(100))
    assert set(cache.entries) == {b"a", b"c", b"d"}


def test_an_entry_larger_than_the_budget_is_not_cached():
    counts = Counts()
    cache, vision = ImageStateCache(100, metrics=counts), FakeVision()
    pixels = images(1, d=64)  # states: 2 x 64 float32 = 512 bytes
    first = asyncio.run(encode(cache, pixels, vision))
    second = asyncio.run(encode(cache, pixels, vision))
    torch.testing.assert_close(first, second)
    assert len(vision.calls) == 2 and cache.bytes == 0 and not cache.entries and counts.evictions == 0


def test_stored_rows_are_compact_copies():
    cache, vision = ImageStateCache(1 << 20), FakeVision()
    out = asyncio.run(encode(cache, images(1, 2, 3, d=16), vision))
    for key, (stored, size) in cache.entries.items():
        assert stored.untyped_storage().nbytes() == size == states_nbytes(stored) == 2 * 16 * 4
        assert stored.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    out.zero_()  # whatever the request does with its batch, the cache keeps its own
    again = asyncio.run(encode(cache, images(1, 2, 3, d=16), vision))
    assert again.abs().sum() > 0 and len(vision.calls) == 1


def test_tuple_states_are_cached_per_row():
    async def vision(pixels):
        return pixels * 3, pixels.sum(1)

    cache = ImageStateCache(1 << 20)
    a, b = asyncio.run(cache.encode(images(1, 2), cache.keys(images(1, 2)), vision))
    x, y = asyncio.run(cache.encode(images(5, 2), cache.keys(images(5, 2)), vision))
    torch.testing.assert_close(x[1], a[1], rtol=0, atol=0)
    torch.testing.assert_close(y, torch.tensor([20.0, 8.0]))
    assert cache.bytes == 3 * (4 + 1) * 4


# -- one encode per image: hits, repeats, concurrency --------------------------------------------

def test_only_missing_images_are_encoded_in_input_order():
    counts = Counts()
    cache, vision = ImageStateCache(1 << 20, metrics=counts), FakeVision()
    asyncio.run(encode(cache, images(1, 2), vision))
    out = asyncio.run(encode(cache, images(3, 2, 3, 1, 4), vision))
    assert [c[:, 0].tolist() for c in vision.calls] == [[1.0, 2.0], [3.0, 4.0]]  # 3 and 4, once each
    want = torch.stack([images(v)[0] for v in (3, 2, 3, 1, 4)])
    torch.testing.assert_close(out, torch.stack([want * 2, want + 1], dim=1), rtol=0, atol=0)
    assert (counts.misses, counts.hits) == (4, 3)


def test_concurrent_calls_for_a_new_image_encode_it_once():
    counts = Counts()
    cache, vision = ImageStateCache(1 << 20, metrics=counts), FakeVision(delay=0.05)

    async def go():
        return await asyncio.gather(*(encode(cache, images(7, 8), vision) for _ in range(3)),
                                    encode(cache, images(8), vision))

    outs = asyncio.run(go())
    assert len(vision.calls) == 1
    for out in outs[1:3]:
        torch.testing.assert_close(out, outs[0], rtol=0, atol=0)
    torch.testing.assert_close(outs[3], outs[0][1:], rtol=0, atol=0)
    assert (counts.misses, counts.hits) == (2, 5) and not cache.inflight


def test_a_failed_encode_is_not_cached_and_the_next_call_encodes():
    cache, vision = ImageStateCache(1 << 20), FakeVision(fail=1)
    with pytest.raises(RuntimeError, match="injected"):
        asyncio.run(encode(cache, images(1), vision))
    assert not cache.entries and not cache.inflight
    out = asyncio.run(encode(cache, images(1), vision))
    assert len(vision.calls) == 2 and out.shape == (1, 2, 4) and len(cache.entries) == 1


def test_a_waiter_does_not_take_a_failed_encode_it_encodes_itself():
    cache, vision = ImageStateCache(1 << 20), FakeVision(delay=0.05, fail=1)

    async def go():
        return await asyncio.gather(encode(cache, images(1), vision), encode(cache, images(1), vision),
                                    return_exceptions=True)

    first, second = asyncio.run(go())
    assert isinstance(first, RuntimeError) and isinstance(second, torch.Tensor)
    assert len(vision.calls) == 2 and len(cache.entries) == 1 and not cache.inflight


def test_a_cancelled_encoder_leaves_its_waiters_to_encode():
    cache, vision = ImageStateCache(1 << 20), FakeVision(delay=0.1)

    async def go():
        owner = asyncio.ensure_future(encode(cache, images(1), vision))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(encode(cache, images(1), vision))
        await asyncio.sleep(0.01)
        owner.cancel()
        out = await waiter
        return owner, out

    owner, out = asyncio.run(go())
    assert owner.cancelled() and out.shape == (1, 2, 4)
    assert len(vision.calls) == 2 and len(cache.entries) == 1 and not cache.inflight


def test_a_cancelled_waiter_does_not_cancel_the_encode():
    cache, vision = ImageStateCache(1 << 20), FakeVision(delay=0.1)

    async def go():
        owner = asyncio.ensure_future(encode(cache, images(1), vision))
        await asyncio.sleep(0.01)
        leaving, staying = (asyncio.ensure_future(encode(cache, images(1), vision)) for _ in range(2))
        await asyncio.sleep(0.01)
        leaving.cancel()
        return await asyncio.gather(owner, staying)

    mine, theirs = asyncio.run(go())
    torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert len(vision.calls) == 1 and len(cache.entries) == 1


# -- through the device worker, with a real engine ---------------------------------------------

class CountingEngine:
    """The tiny BLIP engine with its vision graph's calls counted."""

    def __init__(self, engine):
        self._engine, self.batches = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def encode_images(self, pixels):
        self.batches.append(pixels.shape[0])
        time.sleep(0.05)  # long enough for the second request to arrive while the first runs
        return self._engine.encode_images(pixels)


@pytest.fixture
def counted(engine):
    counting = CountingEngine(engine)
    worker = DeviceWorker(counting, Limits(max_queue_delay_ms=0)).start()
    yield counting, worker
    worker.stop()


def pixels_of(engine, *colors):
    from PIL import Image

    return engine.pixels([Image.new("RGB", (24, 20), c) for c in colors])


def test_two_requests_for_the_same_new_image_run_the_vision_graph_once(counted, engine):
    counting, worker = counted
    cache = ImageStateCache(1 << 26, "tiny")
    px = pixels_of(engine, (200, 30, 30))

    async def go():
        runners = [ScheduledRunner(worker, time.monotonic() + 30, image_cache=cache) for _ in range(2)]
        return await asyncio.gather(*(r.encode_images(px.clone()) for r in runners))

    a, b = asyncio.run(go())
    assert counting.batches == [1]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, engine.encode_images(px), rtol=0, atol=1e-6)


def test_a_budget_of_zero_encodes_every_call(counted, engine):
    counting, worker = counted
    cache = ImageStateCache(0, "tiny")
    px = pixels_of(engine, (10, 200, 30))

    async def go():
        runner = ScheduledRunner(worker, time.monotonic() + 30, image_cache=cache)
        return [await runner.encode_images(px) for _ in range(3)]

    outs = asyncio.run(go())
    assert counting.batches == [1, 1, 1] and not cache.entries
    torch.testing.assert_close(outs[0], outs[2], rtol=0, atol=0)


def test_a_cached_mix_matches_encoding_everything(counted, engine):
    counting, worker = counted
    cache = ImageStateCache(1 << 26, "tiny")
    px = pixels_of(engine, (200, 30, 30), (10, 200, 30), (30, 30, 200))

    async def go():
        runner = ScheduledRunner(worker, time.monotonic() + 30, image_cache=cache)
        await runner.encode_images(px[1:2])
        return await runner.encode_images(px)

    out = asyncio.run(go())
    assert counting.batches == [1, 2]
    torch.testing.assert_close(out, engine.encode_images(px), rtol=0, atol=1e-5)
