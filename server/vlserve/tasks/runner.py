"""The graph operations a task may await. `DirectRunner` calls the engine inline (the
Python API); the server's runner routes the same calls through its batchers."""

from __future__ import annotations

from ..engine.blip_engine import BlipEngine


class DirectRunner:
    def __init__(self, engine: BlipEngine):
        self.engine = engine

    async def offload(self, fn, *args):
        return fn(*args)

    async def encode_images(self, pixels):
        return self.engine.encode_images(pixels)

    async def image_embeddings(self, states):
        return self.engine.image_embeddings(states)

    async def text_embeddings(self, texts):
        return self.engine.text_embeddings(texts)

    async def itm(self, states, texts):
        return self.engine.itm(states, texts)

    async def encode_questions(self, states, questions):
        return self.engine.encode_questions(states, questions)

    async def generate(self, groups):
        return self.engine.generate(groups)

    async def answer_loglik(self, q_states, q_length, candidates):
        return self.engine.answer_loglik(q_states, q_length, candidates)
