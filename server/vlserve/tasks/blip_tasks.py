"""BLIP's tasks as compositions of graph operations, as BLIP itself runs them:

caption    vision -> decoder
embed      vision (+ vision_proj) / text (+ text_proj)
score      ITC cosine matrix and/or ITM match probabilities for every image x text pair
rank       ITC shortlist of k_itc, then ITM re-rank (BLIP's retrieval protocol)
vqa        vision -> fusion (question) -> decoder (generate, or rank given candidates)
"""

from __future__ import annotations

import torch

from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from .results import Answer, Caption, Ranked, RankedAnswer


def _as_list(value, n: int, param: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise InvalidInputError(f"{param} must be one value or one per image ({n})", param=param)
    return value


async def caption(runner, pixels: torch.Tensor, *, prompt=None, params: GenerationParams) -> list[list[Caption]]:
    engine = runner.engine
    engine.require("caption")
    params.validate()
    n = pixels.shape[0]
    prompts = [engine.tokenizer.encode_prompt(engine.default_prompt if p is None else p)
               for p in _as_list(prompt, n, "prompt")]
    states = await runner.encode_images(pixels)
    groups = engine.make_groups(list(states), [states.shape[1]] * n, prompts, [params] * n)
    results = await runner.generate(groups)
    return [[Caption(engine.decode_text(h.tokens), h.tokens, h.logprob) for h in hyps] for hyps in results]


async def embed(runner, pixels: torch.Tensor | None = None, texts: list[str] | None = None):
    """Normalised ITC embeddings: (image (I, E) or None, text (T, E) or None)."""
    engine = runner.engine
    engine.require("embed")
    if pixels is None and not texts:
        raise InvalidInputError("give images, texts or both", param="images")
    if texts:
        engine.tokenizer.validate(list(texts))
    images = None
    if pixels is not None:
        images = await runner.image_embeddings(await runner.encode_images(pixels))
    text = await runner.text_embeddings(list(texts)) if texts else None
    return images, text


async def score(runner, pixels: torch.Tensor, texts: list[str], heads=("itc",)) -> dict[str, torch.Tensor]:
    """{'itc': (I, T) cosine, 'itm': (I, T) match probability} for the heads asked."""
    engine = runner.engine
    heads = tuple(dict.fromkeys(heads))
    if not heads or any(h not in ("itc", "itm") for h in heads):
        raise InvalidInputError("heads must be a non-empty subset of ['itc', 'itm']", param="heads")
    if not texts:
        raise InvalidInputError("at least one text is required", param="texts")
    for h in heads:
        engine.require("embed" if h == "itc" else "itm")
    engine.tokenizer.validate(list(texts))
    states = await runner.encode_images(pixels)
    out = {}
    if "itc" in heads:
        img = await runner.image_embeddings(states)
        out["itc"] = img @ (await runner.text_embeddings(list(texts))).T
    if "itm" in heads:
        i, t = states.shape[0], len(texts)
        pairs = states.repeat_interleave(t, dim=0)  # (I*T, N, D): image i with each text
        probs = await runner.itm(pairs, list(texts) * i)
        out["itm"] = probs.view(i, t)
    return out


async def rank(runner, *, query_pixels=None, query_text=None, candidate_pixels=None, candidate_texts=None,
               k_itc: int = 16, top_k: int = 10, use_itm: bool = True) -> list[Ranked]:
    """One query against candidates of the other modality; best first."""
    engine = runner.engine
    engine.require("embed")
    if use_itm:
        engine.require("itm")
    if (query_pixels is None) == (query_text is None):
        raise InvalidInputError("give exactly one query: an image or a text", param="query")
    if k_itc < 1 or top_k < 1:
        raise InvalidInputError("k_itc and top_k must be >= 1", param="k_itc" if k_itc < 1 else "top_k")
    if query_pixels is not None:
        if not candidate_texts:
            raise InvalidInputError("an image query ranks candidate texts", param="candidates")
        engine.tokenizer.validate(list(candidate_texts), "candidates")
        states = await runner.encode_images(query_pixels)
        itc = ((await runner.image_embeddings(states)) @ (await runner.text_embeddings(candidate_texts)).T)[0]
    else:
        if candidate_pixels is None:
            raise InvalidInputError("a text query ranks candidate images", param="candidates")
        engine.tokenizer.validate([query_text], "query")
        states = await runner.encode_images(candidate_pixels)
        itc = (await runner.image_embeddings(states)) @ (await runner.text_embeddings([query_text]))[0]
    shortlist = torch.argsort(itc, descending=True, stable=True)[: k_itc].tolist()
    if not use_itm:
        return [Ranked(j, float(itc[j])) for j in shortlist[:top_k]]
    if query_pixels is not None:
        probs = await runner.itm(states.expand(len(shortlist), -1, -1), [candidate_texts[j] for j in shortlist])
    else:
        probs = await runner.itm(states[shortlist], [query_text] * len(shortlist))
    ranked = [Ranked(j, float(itc[j]), float(p)) for j, p in zip(shortlist, probs.tolist())]
    ranked.sort(key=lambda r: -r.itm)
    return ranked[:top_k]


async def vqa(runner, pixels: torch.Tensor, questions: list[str], *, params: GenerationParams,
              candidates: list[str] | None = None) -> list[Answer]:
    engine = runner.engine
    engine.require("vqa")
    if len(questions) != pixels.shape[0]:
        raise InvalidInputError(f"{len(questions)} questions for {pixels.shape[0]} images: give one per image",
                                param="questions")
    if candidates is not None and not candidates:
        raise InvalidInputError("candidates, when given, must not be empty", param="candidates")
    params.validate()
    engine.tokenizer.validate(list(questions), "questions")
    if candidates:
        engine.tokenizer.validate(list(candidates), "candidates")
    states = await runner.encode_images(pixels)
    q_states, q_lengths = await runner.encode_questions(states, list(questions))
    if candidates:
        answers = []
        for i, n in enumerate(q_lengths):
            loglik = await runner.answer_loglik(q_states[i], n, list(candidates))
            probs = loglik.softmax(dim=0).tolist()
            order = sorted(range(len(candidates)), key=lambda j: -probs[j])
            best = order[0]
            tokens = engine.tokenizer.answer_ids(candidates[best])[1:-1]
            answers.append(Answer(candidates[best], tokens, float(loglik[best]),
                                  [RankedAnswer(candidates[j], probs[j]) for j in order]))
        return answers
    bos = [engine.tokenizer.dec_id]
    groups = engine.make_groups([q_states[i, :n] for i, n in enumerate(q_lengths)], q_lengths,
                                [bos] * len(q_lengths), [params] * len(q_lengths))
    results = await runner.generate(groups)
    return [Answer(engine.decode_text(h[0].tokens), h[0].tokens, h[0].logprob) for h in results]
