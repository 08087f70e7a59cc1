"""The runner tasks use inside the server: every graph call goes through the model's
DeviceWorker, so calls from concurrent requests share batches."""

from __future__ import annotations

import asyncio

from .worker import DeviceWorker


class ScheduledRunner:
    def __init__(self, worker: DeviceWorker, deadline: float, pool=None):
        self.worker = worker
        self.engine = worker.engine
        self.deadline = deadline
        self.pool = pool  # an executor for CPU work off the event loop (None: asyncio's default)
        self.submitted = False  # some work was accepted into a queue

    async def offload(self, fn, *args):
        """CPU work of the task itself (tokenising, checking texts): never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _call(self, op: str, inputs, size: int):
        item = self.worker.submit(op, inputs, size, self.deadline)
        self.submitted = True
        return await item.future  # a cancelled request cancels the future: the worker skips it

    async def encode_images(self, pixels):
        return await self._call("vision", pixels, pixels.shape[0])

    async def image_embeddings(self, states):
        return await self._call("image_embed", states, states.shape[0])

    async def text_embeddings(self, texts):
        return await self._call("text", list(texts), len(texts))

    async def itm(self, states, texts):
        return await self._call("fusion", (states, list(texts)), len(texts))

    async def encode_questions(self, states, questions):
        return await self._call("fusion_questions", (states, list(questions)), len(questions))

    async def answer_loglik(self, q_states, q_length, candidates):
        return await self._call("answers", (q_states, q_length, list(candidates)), len(candidates))

    async def generate(self, groups):
        item = self.worker.submit_generate(groups, self.deadline)
        self.submitted = True
        return await item.future
