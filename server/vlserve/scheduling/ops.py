"""BLIP's graph operations as batch functions: many requests' inputs in, one engine call,
each request's outputs out (counted against its inputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..engine.blip_engine import BlipEngine


@dataclass(frozen=True)
class Op:
    name: str  # the graph it runs, for metrics and limits
    run: Callable[[BlipEngine, list], list]  # inputs of several items -> one output per item


def _split(batch_output, sizes: list[int]) -> list:
    parts = list(torch.split(batch_output, sizes)) if isinstance(batch_output, torch.Tensor) else None
    if parts is None or len(parts) != len(sizes) or sum(p.shape[0] for p in parts) != batch_output.shape[0]:
        raise RuntimeError("batched output does not match its inputs")
    return parts


def _vision(engine: BlipEngine, inputs: list) -> list:
    return _split(engine.encode_images(torch.cat(inputs)), [x.shape[0] for x in inputs])


def _image_embed(engine: BlipEngine, inputs: list) -> list:
    return _split(engine.image_embeddings(torch.cat(inputs)), [x.shape[0] for x in inputs])


def _text(engine: BlipEngine, inputs: list) -> list:
    return _split(engine.text_embeddings([t for texts in inputs for t in texts]), [len(t) for t in inputs])


def _itm(engine: BlipEngine, inputs: list) -> list:
    states = torch.cat([s for s, _ in inputs])
    texts = [t for _, ts in inputs for t in ts]
    return _split(engine.itm(states, texts), [len(ts) for _, ts in inputs])


def _questions(engine: BlipEngine, inputs: list) -> list:
    states = torch.cat([s for s, _ in inputs])
    hidden, lengths = engine.encode_questions(states, [q for _, qs in inputs for q in qs])
    out, start = [], 0
    for _, qs in inputs:
        n = len(qs)
        part = lengths[start:start + n]
        out.append((hidden[start:start + n, : max(part)], part))
        start += n
    if start != hidden.shape[0]:
        raise RuntimeError("batched output does not match its inputs")
    return out


def _answers(engine: BlipEngine, inputs: list) -> list:
    return engine.answer_loglik_batch(inputs)


OPS = {op.name: op for op in (
    Op("vision", _vision),
    Op("image_embed", _image_embed),
    Op("text", _text),
    Op("fusion", _itm),
    Op("fusion_questions", _questions),
    Op("answers", _answers),
)}
