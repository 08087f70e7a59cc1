"""Image states kept per model, so every task on the same image (caption, then a question,
then a score: a playground session, a client asking several things) runs the vision graph
once.

Keys are a blake2b hash of each image's preprocessed pixels (shape, dtype and bytes) with
the model's name and the graph: the pixels are what the vision graph reads, so equal keys
mean equal states, whatever a client names its image. The budget is in bytes of stored
states (least recently used evicted first); an entry larger than the budget is not kept.

Concurrent misses on one key encode once (single-flight): the first call encodes, the
others await it. When that encode fails or its request goes away, the waiters do not take
its error; they look again, and one of them encodes under its own request.

Stored rows are copies, so a cached row does not pin the batch it came from; consumers
read states and never write into them (no graph op does; keep it so).

Used from one event loop (the server's); only `keys` runs elsewhere (the preprocessing pool).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import Awaitable, Callable

import torch

from ..engine.family import States, cat_states, index_states

GRAPH = "vision"


class NullCacheMetrics:
    def cache_hits(self, n): ...
    def cache_misses(self, n): ...
    def cache_evictions(self, n): ...
    def cache_size(self, nbytes, entries): ...


def image_key(pixels: torch.Tensor, model: str) -> bytes:
    """The key of one image's preprocessed pixels (C, H, W) for `model`'s vision graph."""
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((model, GRAPH, str(pixels.dtype), tuple(pixels.shape))).encode() + b"\n")
    h.update(pixels.detach().cpu().contiguous().view(torch.uint8).reshape(-1).numpy())
    return h.digest()


def states_nbytes(states: States) -> int:
    return sum(t.nbytes for t in (states if isinstance(states, tuple) else (states,)))


def _copy(states: States) -> States:
    if isinstance(states, tuple):
        return tuple(t.clone(memory_format=torch.contiguous_format) for t in states)
    return states.clone(memory_format=torch.contiguous_format)


class ImageStateCache:
    def __init__(self, budget_bytes: int, model: str = "model", metrics=None):
        self.budget, self.model = budget_bytes, model
        self.metrics = metrics or NullCacheMetrics()
        self.entries: OrderedDict[bytes, tuple[States, int]] = OrderedDict()  # oldest first
        self.bytes = 0
        self.inflight: dict[bytes, asyncio.Future] = {}  # key -> its row's states, None if the encode failed

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def keys(self, pixels: torch.Tensor) -> list[bytes]:
        return [image_key(p, self.model) for p in pixels]

    def get(self, key: bytes) -> States | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, row: States) -> None:
        """Keep one image's states (a detached copy), evicting the least recently used."""
        size = states_nbytes(row)
        if size > self.budget or key in self.entries:
            return
        self.entries[key] = (row, size)
        self.bytes += size
        evicted = 0
        while self.bytes > self.budget:
            _, (_, old) = self.entries.popitem(last=False)
            self.bytes -= old
            evicted += 1
        if evicted:
            self.metrics.cache_evictions(evicted)
        self.metrics.cache_size(self.bytes, len(self.entries))

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
        self.metrics.cache_size(0, 0)

    def describe(self) -> dict:
        return {"budget_bytes": self.budget, "bytes": self.bytes, "entries": len(self.entries)}

    async def encode(self, pixels: torch.Tensor, keys: list[bytes],
                     encode: Callable[[torch.Tensor], Awaitable[States]]) -> States:
        """The states of every image of `pixels` (B, ...), in order: cached ones looked up, ones
        another call is encoding awaited, the rest encoded by one call of `encode`. Hits count
        every image this call did not encode itself."""
        if not keys:
            return await encode(pixels)
        rows: list[States | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        while pending:  # a second round only when an encode we waited on failed
            mine: dict[bytes, list[int]] = {}
            theirs: dict[bytes, tuple[asyncio.Future, list[int]]] = {}
            hits = 0
            for i in pending:
                key = keys[i]
                if key in mine:
                    mine[key].append(i)
                elif key in theirs:
                    theirs[key][1].append(i)
                elif (row := self.get(key)) is not None:
                    rows[i] = row
                    hits += 1
                elif key in self.inflight:
                    theirs[key] = (self.inflight[key], [i])
                else:
                    mine[key] = [i]
            pending = []
            if mine:  # ours first, then theirs: no call waits before its own encode, so no cycle
                states, copies = await self._encode_and_keep(pixels, mine, encode)
                if len(mine) == len(keys):  # every image new and distinct, in order: the batch as is
                    return states
                for key, idx in mine.items():
                    hits += len(idx) - 1  # repeats within this call
                    for i in idx:
                        rows[i] = copies[key]
            for future, idx in theirs.values():
                row = await asyncio.shield(future)  # our cancellation must not cancel their encode
                if row is None:
                    pending += idx
                    continue
                hits += len(idx)
                for i in idx:
                    rows[i] = row
            pending.sort()
            if hits:
                self.metrics.cache_hits(hits)
        return cat_states(rows)

    async def _encode_and_keep(self, pixels, mine: dict[bytes, list[int]], encode):
        """Encode the first image of each key in one call, keep copies, wake the waiters:
        (the encode's output, {key: its row's copy})."""
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in mine}
        self.inflight.update(futures)
        self.metrics.cache_misses(len(mine))
        firsts = [idx[0] for idx in mine.values()]
        copies: dict[bytes, States] = {}
        try:
            states = await encode(pixels if len(firsts) == pixels.shape[0] else pixels[firsts])
            for j, key in enumerate(mine):
                copies[key] = row = _copy(index_states(states, slice(j, j + 1)))
                self.put(key, row)
        finally:  # success, failure or cancellation: the key is free and its waiters woken
            for key, future in futures.items():
                if self.inflight.get(key) is future:
                    del self.inflight[key]
                if not future.done():
                    future.set_result(copies.get(key))  # None: they look again
        return states, copies
