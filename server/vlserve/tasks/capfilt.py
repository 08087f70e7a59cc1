"""capfilt, BLIP's data bootstrapping: the captioner samples synthetic captions for each
image; the filter's ITM keeps the captions (web and synthetic) that match the image. The
captioner and the filter may be two models (e.g. a captioning and a retrieval checkpoint)."""

from __future__ import annotations

import asyncio

import torch

from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from .caption import sample_captions
from .models import TaskModel, require
from .results import FilteredCaption


async def capfilt(captioner: TaskModel, pixels: torch.Tensor, web_texts: list[list[str]] | None = None, *,
                  params: GenerationParams, num_synthetic: int = 1, threshold: float = 0.5,
                  filter: TaskModel | None = None, filter_pixels: torch.Tensor | None = None
                  ) -> list[list[FilteredCaption]]:
    """Per image: its web captions and `num_synthetic` sampled ones, each with the filter's
    ITM probability and whether it passes `threshold`. With another `filter`,
    `filter_pixels` are the same images preprocessed for it."""
    filter = filter or captioner
    same = filter is captioner
    role = "model" if same else "filter"
    if num_synthetic > 0:
        require(captioner, "caption", role="model" if same else "captioner")
    require(filter, "score", heads=("itm",), role=role)
    n = pixels.shape[0]
    web = [list(t) for t in web_texts] if web_texts is not None else [[] for _ in range(n)]
    if len(web) != n:
        raise InvalidInputError(f"texts must hold one list per image ({n})", param="texts")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError("threshold must be between 0 and 1", param="threshold")
    for i, texts in enumerate(web):
        if texts:
            await filter.runner.offload(filter.engine.check_texts, texts, f"texts[{i}]")
    states = await captioner.runner.encode_images(pixels)

    async def synthesize():
        if num_synthetic <= 0:
            return [[] for _ in range(n)]
        sampling = params.replace(num_return=num_synthetic).validate()
        prompt = await captioner.runner.offload(captioner.engine.caption_prompt, None)
        hyps = await sample_captions(captioner, states, [prompt] * n, sampling)
        return [[captioner.engine.decode_text(h.tokens) for h in per] for per in hyps]

    async def filter_states():
        return states if same else await filter.runner.encode_images(filter_pixels)

    synthetic, judged = await asyncio.gather(synthesize(), filter_states())
    candidates = [[(t, "web") for t in w] + [(t, "synthetic") for t in s if t] for w, s in zip(web, synthetic)]
    rows = [i for i, cands in enumerate(candidates) for _ in cands]
    texts = [t for cands in candidates for t, _ in cands]
    if not same and texts:  # synthetic captions come from another model: the filter's tokenizer checks them
        await filter.runner.offload(filter.engine.check_texts, texts, "texts")
    probs = (await filter.runner.match(judged, rows, texts)).tolist() if rows else []
    out, k = [], 0
    for cands in candidates:
        out.append([FilteredCaption(t, src, p, p >= threshold) for (t, src), p in zip(cands, probs[k:k + len(cands)])])
        k += len(cands)
    return out
