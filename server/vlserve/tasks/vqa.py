"""vqa: answer one question per image, three ways (a model serves those it can):

generate   the question's sources (BLIP: vision -> fusion over the question) -> answer decoder
rank       the decoder's likelihood of each given candidate (every question concurrently)
classify   a classifier over the model's answer list (BEiT-3)
"""

from __future__ import annotations

import asyncio
import math

import torch

from ..engine.generation.loop import make_groups
from ..engine.generation.params import GenerationParams
from ..errors import InvalidInputError
from .models import TaskModel, require
from .results import Answer, RankedAnswer


def choose_mode(model: TaskModel, mode: str | None, candidates) -> str:
    """rank when candidates are given; else the model's first of generate, classify."""
    modes = model.capabilities.vqa_modes
    if mode is None:
        mode = "rank" if candidates else next((m for m in ("generate", "classify") if m in modes), "generate")
    require(model, "vqa", vqa_mode=mode)
    return mode


def _ranked(answers: list[str], probs: list[float], top_k: int | None) -> list[RankedAnswer]:
    order = sorted(range(len(answers)), key=lambda j: -probs[j])[:top_k]
    return [RankedAnswer(answers[j], probs[j]) for j in order]


async def vqa(model: TaskModel, pixels: torch.Tensor, questions: list[str], *, params: GenerationParams,
              candidates: list[str] | None = None, mode: str | None = None,
              top_k: int | None = None) -> list[Answer]:
    """One answer per question; `ranked` holds the answers with their probabilities, best
    first, the top_k of them (None: all) in rank and classify modes."""
    if len(questions) != pixels.shape[0]:
        raise InvalidInputError(f"{len(questions)} questions for {pixels.shape[0]} images: give one per image",
                                param="questions")
    if candidates is not None and not candidates:
        raise InvalidInputError("candidates, when given, must not be empty", param="candidates")
    if top_k is not None and top_k < 1:
        raise InvalidInputError("top_k must be at least 1", param="top_k")
    mode = choose_mode(model, mode, candidates)
    if mode == "rank" and not candidates:
        raise InvalidInputError("ranking needs candidates (or the model's answer list)", param="candidates")
    engine, runner = model.engine, model.runner
    params.validate()
    await runner.offload(engine.check_texts, list(questions), "questions")
    if candidates:
        await runner.offload(engine.check_texts, list(candidates), "candidates")
    states = await runner.encode_images(pixels)
    if mode == "classify":
        probs = (await runner.classify(states, list(questions))).tolist()
        answers = list(engine.answers)
        out = []
        for p in probs:
            ranked = _ranked(answers, p, top_k)
            out.append(Answer(ranked[0].text, [], math.log(max(ranked[0].prob, 1e-30)), ranked))
        return out
    sources = await runner.question_sources(states, list(questions))
    if mode == "rank":
        logliks = await asyncio.gather(*(runner.answer_loglik(s, candidates) for s in sources))
        out = []
        for loglik in logliks:
            probs = loglik.softmax(dim=0).tolist()
            best = max(range(len(candidates)), key=probs.__getitem__)
            out.append(Answer(candidates[best], engine.answer_tokens(candidates[best]), float(loglik[best]),
                              _ranked(list(candidates), probs, top_k)))
        return out
    graph = engine.answer_decoder
    prompt = engine.answer_prompt()
    groups = make_groups(graph, sources, [prompt] * len(sources), [params] * len(sources))
    results = await runner.generate(groups, graph)
    return [Answer(engine.decode_text(h[0].tokens), h[0].tokens, h[0].logprob) for h in results]
