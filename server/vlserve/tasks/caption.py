"""caption: vision -> the captioner's decoder (greedy, beams or sampling)."""

from __future__ import annotations

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


async def sample_captions(model: TaskModel, states, prompts: list[list[int]], params: GenerationParams):
    """The captioner's hypotheses for already-encoded images, one list per image."""
    engine = model.engine
    graph = engine.caption_decoder
    groups = make_groups(graph, engine.caption_sources(states), prompts, [params] * len(prompts))
    return await model.runner.generate(groups, graph)


async def caption(model: TaskModel, pixels: torch.Tensor, *, prompt=None,
                  params: GenerationParams) -> list[list[Caption]]:
    require(model, "caption")
    engine, runner = model.engine, model.runner
    params.validate()
    texts = per_image(prompt, pixels.shape[0], "prompt")
    prompts = await runner.offload(lambda: [engine.caption_prompt(p) for p in texts])
    results = await sample_captions(model, await runner.encode_images(pixels), prompts, params)
    return [[Caption(engine.decode_text(h.tokens), h.tokens, h.logprob) for h in hyps] for hyps in results]
