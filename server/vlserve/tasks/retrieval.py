"""Retrieval, as BLIP runs it:

embed   normalised ITC embeddings of images and/or texts (the two towers run concurrently)
score   ITC cosine and/or ITM match probability for every image x text pair
rank    one query against candidates of the other modality: ITC shortlist of k_itc, then
        ITM re-rank when the re-ranking model has a match head (BLIP's retrieval protocol);
        the re-ranker may be another model (LAION-COCO: BLIP captions re-ranked by CLIP)
"""

from __future__ import annotations

import asyncio

import torch

from ..errors import InvalidInputError
from .models import TaskModel, require
from .results import Ranked

HEADS = ("itc", "itm")


async def _nothing():
    return None


async def _image_embeddings(model: TaskModel, pixels=None, states=None):
    states = states if states is not None else await model.runner.encode_images(pixels)
    return await model.runner.image_embeddings(states)


async def embed(model: TaskModel, pixels: torch.Tensor | None = None, texts: list[str] | None = None):
    """(image (I, E) or None, text (T, E) or None), unit length."""
    require(model, "embed")
    if pixels is None and not texts:
        raise InvalidInputError("give images, texts or both", param="images")
    if texts:
        await model.runner.offload(model.engine.check_texts, list(texts), "texts")
    return await asyncio.gather(_image_embeddings(model, pixels) if pixels is not None else _nothing(),
                                model.runner.text_embeddings(texts) if texts else _nothing())


async def score(model: TaskModel, pixels: torch.Tensor, texts: list[str], heads=("itc",)) -> dict[str, torch.Tensor]:
    """{'itc': (I, T) cosine, 'itm': (I, T) match probability} for the heads asked."""
    heads = tuple(dict.fromkeys(heads))
    if not heads or any(h not in HEADS for h in heads):
        raise InvalidInputError(f"heads must be a non-empty subset of {list(HEADS)}", param="heads")
    if not texts:
        raise InvalidInputError("at least one text is required", param="texts")
    require(model, "score", heads=heads)
    runner = model.runner
    await runner.offload(model.engine.check_texts, list(texts), "texts")
    states = await runner.encode_images(pixels)
    i, t = pixels.shape[0], len(texts)

    async def itc():
        img, txt = await asyncio.gather(runner.image_embeddings(states), runner.text_embeddings(list(texts)))
        return img @ txt.T

    async def itm():  # pair (i, j) = image i with text j; built lazily in the worker
        rows = [r for r in range(i) for _ in range(t)]
        return (await runner.match(states, rows, list(texts) * i)).view(i, t)

    jobs = {"itc": itc, "itm": itm}
    return dict(zip(heads, await asyncio.gather(*(jobs[h]() for h in heads))))


async def rank(model: TaskModel, *, query_pixels=None, query_text=None, candidate_pixels=None,
               candidate_texts=None, k_itc: int = 16, top_k: int = 10, rerank: bool | None = None,
               reranker: TaskModel | None = None, rerank_pixels=None) -> list[Ranked]:
    """Best first. `rerank` None: re-rank with ITM when the re-ranker has a match head.
    With another `reranker`, `rerank_pixels` are the same images preprocessed for it."""
    require(model, "rank")
    reranker = reranker or model
    use_itm = "itm" in reranker.capabilities.score_heads if rerank is None else rerank
    if use_itm:
        require(reranker, "score", heads=("itm",), role="reranker" if reranker is not model else "model")
    if (query_pixels is None) == (query_text is None):
        raise InvalidInputError("give exactly one query: an image or a text", param="query")
    if k_itc < 1 or top_k < 1:
        raise InvalidInputError("k_itc and top_k must be >= 1", param="k_itc" if k_itc < 1 else "top_k")
    image_query = query_pixels is not None
    if image_query and not candidate_texts:
        raise InvalidInputError("an image query ranks candidate texts", param="candidates")
    if not image_query and candidate_pixels is None:
        raise InvalidInputError("a text query ranks candidate images", param="candidates")
    texts = list(candidate_texts) if image_query else [query_text]
    await model.runner.offload(model.engine.check_texts, texts, "candidates" if image_query else "query")
    pixels = query_pixels if image_query else candidate_pixels
    states = await model.runner.encode_images(pixels)
    img, txt = await asyncio.gather(_image_embeddings(model, states=states), model.runner.text_embeddings(texts))
    itc = (img @ txt.T)[0] if image_query else img @ txt[0]
    shortlist = torch.argsort(itc, descending=True, stable=True)[:k_itc].tolist()
    if not use_itm:
        return [Ranked(j, float(itc[j])) for j in shortlist[:top_k]]
    if reranker is not model:
        await reranker.runner.offload(reranker.engine.check_texts, texts, "candidates" if image_query else "query")
        states = await reranker.runner.encode_images(rerank_pixels)
    if image_query:
        probs = await reranker.runner.match(states, [0] * len(shortlist), [candidate_texts[j] for j in shortlist])
    else:
        probs = await reranker.runner.match(states, shortlist, [query_text] * len(shortlist))
    ranked = [Ranked(j, float(itc[j]), float(p)) for j, p in zip(shortlist, probs.tolist())]
    ranked.sort(key=lambda r: -r.itm)
    return ranked[:top_k]
