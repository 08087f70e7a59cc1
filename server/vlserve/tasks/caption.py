"""caption: vision -> the captioner's decoder (greedy, beams or sampling)."""

from __future__ import annotations

import asyncio
import functools

import torch

from ..engine.generation.loop import make_groups
from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from .models import TaskModel, require
from .results import Caption


def per_image(value, n: int, param: str) -> list:
    """One value for every image, or one each."""
    if value is None or isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise InvalidInputError(f"{param} must be one value or one per image ({n})", param=param)
    return value


async def sample_captions(model: TaskModel, states, prompts: list[list[int]], params: GenerationParams,
                          listener=None):
    """The captioner's hypotheses for already-encoded images, one list per image. `listener`
    (greedy and sampling): called (image, sample, position, token, the sample's model log-prob
    so far) as each token is chosen, on the decode loop's thread."""
    engine = model.engine
    graph = engine.caption_decoder
    groups = make_groups(graph, engine.caption_sources(states), prompts, [params] * len(prompts))
    if listener is not None:
        for i, g in enumerate(groups):
            g.listener = functools.partial(listener, i)
    return await model.runner.generate(groups, graph)


async def caption(model: TaskModel, pixels: torch.Tensor, *, prompt=None, params: GenerationParams,
                  with_embeddings: bool = False, listener=None):
    """One list of captions per image; with_embeddings: (captions, image embeddings (B, E))
    from the same vision pass (CoCa's point: one encoder pass for both); listener: as
    sample_captions' (streaming)."""
    require(model, "caption")
    if with_embeddings:
        require(model, "embed")
    engine, runner = model.engine, model.runner
    params.validate()
    texts = per_image(prompt, pixels.shape[0], "prompt")
    prompts = await runner.offload(lambda: [engine.caption_prompt(p) for p in texts])
    states = await runner.encode_images(pixels)
    embedding = runner.image_embeddings(states) if with_embeddings else None
    results, embeddings = await asyncio.gather(sample_captions(model, states, prompts, params, listener),
                                               embedding if embedding is not None else _nothing())
    caps = [[Caption(engine.decode_text(h.tokens), h.tokens, h.logprob) for h in hyps] for hyps in results]
    return (caps, embeddings) if with_embeddings else caps


async def _nothing():
    return None
