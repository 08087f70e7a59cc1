"""BLIP's tasks as compositions of graph operations, as BLIP itself runs them:

caption    vision -> decoder
embed      vision (+ vision_proj) / text (+ text_proj)
score      ITC cosine matrix and/or ITM match probabilities for every image x text pair
rank       ITC shortlist of k_itc, then ITM re-rank (BLIP's retrieval protocol)
vqa        vision -> fusion (question) -> decoder (generate, or rank given candidates)
capfilt    BLIP's data bootstrapping: the captioner samples synthetic captions, the ITM filter
           keeps the web and synthetic captions that match the image
"""

from __future__ import annotations

import torch

from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from .results import Answer, Caption, FilteredCaption, Ranked, RankedAnswer


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
    prompts = await runner.offload(lambda: [engine.tokenizer.encode_prompt(engine.default_prompt if p is None else p)
                                            for p in _as_list(prompt, n, "prompt")])
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
        await runner.offload(engine.tokenizer.validate, list(texts))
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
    await runner.offload(engine.tokenizer.validate, list(texts))
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
        await runner.offload(engine.tokenizer.validate, list(candidate_texts), "candidates")
        states = await runner.encode_images(query_pixels)
        itc = ((await runner.image_embeddings(states)) @ (await runner.text_embeddings(candidate_texts)).T)[0]
    else:
        if candidate_pixels is None:
            raise InvalidInputError("a text query ranks candidate images", param="candidates")
        await runner.offload(engine.tokenizer.validate, [query_text], "query")
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
    await runner.offload(engine.tokenizer.validate, list(questions), "questions")
    if candidates:
        await runner.offload(engine.tokenizer.validate, list(candidates), "candidates")
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


async def capfilt(runner, pixels: torch.Tensor, web_texts: list[list[str]] | None = None, *,
                  params: GenerationParams, num_synthetic: int = 1,
                  threshold: float = 0.5) -> list[list[FilteredCaption]]:
    """Per image: its web captions and `num_synthetic` sampled ones, each with the
    filter's ITM probability and whether it passes `threshold`."""
    engine = runner.engine
    engine.require("caption")
    engine.require("itm")
    n = pixels.shape[0]
    web = [list(t) for t in web_texts] if web_texts is not None else [[] for _ in range(n)]
    if len(web) != n:
        raise InvalidInputError(f"texts must hold one list per image ({n})", param="texts")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError("threshold must be between 0 and 1", param="threshold")
    for i, texts in enumerate(web):
        if texts:
            await runner.offload(engine.tokenizer.validate, texts, f"texts[{i}]")
    states = await runner.encode_images(pixels)
    synthetic = [[] for _ in range(n)]
    if num_synthetic > 0:
        params = params.replace(num_return=num_synthetic).validate()
        prompt = await runner.offload(engine.tokenizer.encode_prompt, engine.default_prompt)
        groups = engine.make_groups(list(states), [states.shape[1]] * n, [prompt] * n, [params] * n)
        synthetic = [[engine.decode_text(h.tokens) for h in hyps] for hyps in await runner.generate(groups)]
    candidates = [[(t, "web") for t in w] + [(t, "synthetic") for t in s if t] for w, s in zip(web, synthetic)]
    rows = [i for i, cands in enumerate(candidates) for _ in cands]
    probs = (await runner.itm(states[rows], [t for cands in candidates for t, _ in cands])).tolist() if rows else []
    out, k = [], 0
    for cands in candidates:
        scored = [FilteredCaption(t, src, p, p >= threshold) for (t, src), p in zip(cands, probs[k:k + len(cands)])]
        out.append(scored)
        k += len(cands)
    return out
