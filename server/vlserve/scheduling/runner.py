"""The graph operations a task may await, whoever runs them.

`ScheduledRunner` (the server) sends every call through the model's DeviceWorker, so
calls from concurrent requests share batches; `DirectRunner` (the Python API) calls the
engine inline. Both cut an input larger than `max_batch_size` examples into pieces and
keep at most WINDOW pieces of one call queued at a time, so a huge request runs as
bounded batches beside everyone else's work, never as one giant batch. With a model's
ImageStateCache, `encode_images` encodes only the images the cache does not hold.
"""

from __future__ import annotations

import asyncio
import contextvars

from ..engine.family import DecoderGraph, FamilyEngine, Source
from ..engine.generation.loop import generate
from .image_cache import ImageStateCache
from .ops import OPS, Pairs
from .worker import DeviceWorker, Limits

WINDOW = 4  # pieces of one call in flight at once


async def in_pool(pool, fn, *args):
    """fn(*args) on an executor thread (None: asyncio's default), carrying the caller's context
    (the request id) so the thread's log lines name the request."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(pool, context.run, fn, *args)


class Runner:
    engine: FamilyEngine
    max_batch_size: int
    image_cache: ImageStateCache | None = None

    async def _run(self, op: str, inputs, size: int):
        """One piece (at most max_batch_size examples) of an op's input -> its output."""
        raise NotImplementedError

    async def offload(self, fn, *args):
        """CPU work of the task itself (tokenising, checking texts)."""
        raise NotImplementedError

    async def _call(self, name: str, inputs):
        op = OPS[name]
        n, step = op.size(inputs), self.max_batch_size
        if n <= step:
            return await self._run(name, inputs, n)
        bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
        limit = asyncio.Semaphore(WINDOW)

        async def piece(a: int, b: int):
            async with limit:
                return await self._run(name, op.cut(inputs, a, b), b - a)

        tasks = [asyncio.ensure_future(piece(a, b)) for a, b in bounds]
        try:
            return op.join(list(await asyncio.gather(*tasks)))
        finally:  # one piece failed or the request went away: the rest stop
            for task in tasks:
                task.cancel()

    # -- the operations ------------------------------------------------------------------

    async def encode_images(self, pixels):
        cache = self.image_cache
        if cache is None or not cache.enabled:
            return await self._call("vision", pixels)
        keys = await self.offload(cache.keys, pixels)  # hashing megabytes of pixels: off the event loop
        return await cache.encode(pixels, keys, lambda part: self._call("vision", part))

    async def image_embeddings(self, states):
        return await self._call("image_embed", states)

    async def text_embeddings(self, texts: list[str]):
        return await self._call("text", list(texts))

    async def match(self, states, rows: list[int], texts: list[str]):
        """Match probability of each pair (states[rows[j]], texts[j]); pairs are built in the worker."""
        return await self._call("match", Pairs(states, list(rows), list(texts)))

    async def question_sources(self, states, questions: list[str]) -> list[Source]:
        return await self._call("question", (states, list(questions)))

    async def answer_loglik(self, source: Source, candidates: list[str]):
        return await self._call("answer_rank", (source, list(candidates)))

    async def classify(self, states, questions: list[str]):
        return await self._call("classify", (states, list(questions)))

    async def generate(self, groups: list, graph: DecoderGraph):
        raise NotImplementedError


class ScheduledRunner(Runner):
    def __init__(self, worker: DeviceWorker, deadline: float, pool=None, image_cache: ImageStateCache | None = None):
        self.worker = worker
        self.image_cache = image_cache  # the model's, shared by every request
        self.engine = worker.engine
        self.max_batch_size = worker.limits.max_batch_size
        self.deadline = deadline
        self.pool = pool  # an executor for CPU work off the event loop (None: asyncio's default)
        self.submitted = False  # some work was accepted into a queue

    async def offload(self, fn, *args):
        return await in_pool(self.pool, fn, *args)

    async def _run(self, op: str, inputs, size: int):
        item = self.worker.submit(op, inputs, size, self.deadline)
        self.submitted = True
        return await item.future  # a cancelled request cancels the future: the worker skips it

    async def generate(self, groups: list, graph: DecoderGraph):
        item = self.worker.submit_generate(groups, self.deadline, graph)
        self.submitted = True
        return await item.future


class DirectRunner(Runner):
    def __init__(self, engine: FamilyEngine, max_batch_size: int = Limits().max_batch_size):
        self.engine, self.max_batch_size = engine, max_batch_size

    async def offload(self, fn, *args):
        return fn(*args)

    async def _run(self, op: str, inputs, size: int):
        return OPS[op].run(self.engine, [inputs])[0]

    async def generate(self, groups: list, graph: DecoderGraph):
        return generate(graph, groups)
