"""The graph operations the scheduler batches, built on the family contract: many requests'
inputs in, one engine call, each request's outputs out (counted against its inputs).

Each op also says how to cut one request's input into pieces of at most max_batch_size
examples and join the pieces' outputs, so an item far larger than a batch runs as several
bounded batches (scheduling/runner.py). Op names are what they compute; they label the
queues and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..engine.family import (AnswerClassifier, AnswerGenerator, AnswerRanker, FamilyEngine, Matcher, Source,
                             batch_size, cat_states, index_states, split_states)


@dataclass(frozen=True)
class Pairs:
    """Image-text pairs built lazily: pair j is (states[rows[j]], texts[j]). The states stay
    one shared reference; the pairs' own states are gathered in the worker."""

    states: Any
    rows: list[int]
    texts: list[str]


@dataclass(frozen=True)
class Op:
    name: str
    run: Callable[[FamilyEngine, list], list]  # inputs of several items -> one output per item
    size: Callable[[Any], int]  # examples in one input
    cut: Callable[[Any, int, int], Any]  # examples [a, b) of one input
    join: Callable[[list], Any]  # outputs of the pieces -> one output
    needs: type | None = None  # the optional capability the engine must have


def _checked(outputs: list, sizes: list[int], count=len) -> list:
    if len(outputs) != len(sizes) or any(count(o) != n for o, n in zip(outputs, sizes)):
        raise RuntimeError("batched output does not match its inputs")
    return outputs


def _rows(tensor_or_states) -> int:
    return batch_size(tensor_or_states)


def _vision(engine, inputs):
    sizes = [x.shape[0] for x in inputs]
    return _checked(split_states(engine.encode_images(torch.cat(inputs)), sizes), sizes, _rows)


def _image_embed(engine, inputs):
    sizes = [batch_size(s) for s in inputs]
    return _checked(list(torch.split(engine.image_embeddings(cat_states(inputs)), sizes)), sizes, _rows)


def _text(engine, inputs):
    sizes = [len(t) for t in inputs]
    out = engine.text_embeddings([t for texts in inputs for t in texts])
    return _checked(list(torch.split(out, sizes)), sizes, _rows)


def _match(engine, inputs: list[Pairs]):
    states = cat_states([index_states(p.states, p.rows) for p in inputs])
    sizes = [len(p.texts) for p in inputs]
    out = engine.match(states, [t for p in inputs for t in p.texts])
    return _checked(list(torch.split(out, sizes)), sizes, _rows)


def _split_list(flat: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for n in sizes:
        out.append(flat[start:start + n])
        start += n
    if start != len(flat):
        raise RuntimeError("batched output does not match its inputs")
    return out


def _questions(engine, inputs):
    sizes = [len(q) for _, q in inputs]
    sources = engine.question_sources(cat_states([s for s, _ in inputs]), [q for _, qs in inputs for q in qs])
    return _checked(_split_list(sources, sizes), sizes)


def _answer_rank(engine, inputs: list[tuple[Source, list[str]]]):
    return _checked(engine.answer_loglik(inputs), [len(c) for _, c in inputs], _rows)


def _classify(engine, inputs):
    sizes = [len(q) for _, q in inputs]
    out = engine.classify(cat_states([s for s, _ in inputs]), [q for _, qs in inputs for q in qs])
    return _checked(list(torch.split(out, sizes)), sizes, _rows)


def _states_and_texts(x, a, b):
    states, texts = x
    return index_states(states, slice(a, b)), texts[a:b]


_cat = torch.cat
OPS = {op.name: op for op in (
    Op("vision", _vision, lambda x: x.shape[0], lambda x, a, b: x[a:b], cat_states),
    Op("image_embed", _image_embed, batch_size, lambda x, a, b: index_states(x, slice(a, b)), _cat),
    Op("text", _text, len, lambda x, a, b: x[a:b], _cat),
    Op("match", _match, lambda p: len(p.texts), lambda p, a, b: Pairs(p.states, p.rows[a:b], p.texts[a:b]), _cat,
       Matcher),
    Op("question", _questions, lambda x: len(x[1]), _states_and_texts, lambda parts: [s for p in parts for s in p],
       AnswerGenerator),
    Op("answer_rank", _answer_rank, lambda x: len(x[1]), lambda x, a, b: (x[0], x[1][a:b]), _cat, AnswerRanker),
    Op("classify", _classify, lambda x: len(x[1]), _states_and_texts, _cat, AnswerClassifier),
)}


def ops_for(engine: FamilyEngine) -> dict[str, Op]:
    """The ops this model can run (an op whose capability it lacks gets no queue)."""
    return {name: op for name, op in OPS.items() if op.needs is None or engine.supports(op.needs)}
