"""Training batches drawn on the fly from the shapes world, and false captions as hard negatives.

Step k of a run with seed s draws its scenes from seed TRAIN_SEED_BASE * (s + 1) + k: every
training seed is >= TRAIN_SEED_BASE, so seeds below it (evaluation, tests) are never trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from vlserve.engine.images import ImageProcessor
from vlserve.families.blip.tokenizer import BlipTokenizer
from vlserve.shapes import COLORS, SHAPES, SIZES, Scene, questions, render, sample_scene
from vlserve.shapes.world import caption_of

TRAIN_SEED_BASE = 1_000_000
CAPTION_LEN = 12  # [CLS] + 10 words + [SEP]: the longest caption
QUESTION_LEN = 9
ANSWER_LEN = 3  # [DEC] answer [SEP]


def false_caption(scene: Scene, rng: random.Random) -> str:
    """A caption that does not describe the scene but differs from the true one in one detail:
    a swapped or changed attribute, the order or relation, an object added or left out."""
    a = scene.objects[0]
    while True:
        if len(scene.objects) == 1:
            kind = rng.choice(["color", "shape", "size", "add"])
            if kind == "add":
                other = replace(a, shape=rng.choice([s for s in SHAPES if s != a.shape]),
                                color=rng.choice([c for c in COLORS if c != a.color]),
                                size=rng.choice(list(SIZES)))
                pair = [a, other] if rng.random() < 0.5 else [other, a]
                text = caption_of(pair, rng.choice(["left of", "above"]))
            else:
                text = caption_of([_change(a, kind, rng)], None)
        else:
            b = scene.objects[1]
            kind = rng.choice(["swap_color", "swap_shape", "swap_size", "order", "relation", "change", "drop"])
            rel = scene.relation
            if kind == "swap_color":
                text = caption_of([replace(a, color=b.color), replace(b, color=a.color)], rel)
            elif kind == "swap_shape":
                text = caption_of([replace(a, shape=b.shape), replace(b, shape=a.shape)], rel)
            elif kind == "swap_size":
                text = caption_of([replace(a, size=b.size), replace(b, size=a.size)], rel)
            elif kind == "order":
                text = caption_of([b, a], rel)
            elif kind == "relation":
                other = "above" if rel == "left of" else "left of"
                text = caption_of([a, b] if rng.random() < 0.5 else [b, a], other)
            elif kind == "change":
                objs = [a, b]
                i = rng.randrange(2)
                objs[i] = _change(objs[i], rng.choice(["color", "shape", "size"]), rng, avoid=objs[1 - i])
                text = caption_of(objs, rel)
            else:
                text = caption_of([rng.choice([a, b])], None)
        if text != scene.caption:
            return text


def _change(obj, attr: str, rng: random.Random, avoid=None):
    """obj with one attribute set to another value (not the other object's, for two objects)."""
    values = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}[attr]
    banned = {getattr(obj, attr)} | ({getattr(avoid, attr)} if avoid is not None and attr != "size" else set())
    return replace(obj, **{attr: rng.choice([v for v in values if v not in banned])})


@dataclass
class Batch:
    pixels: torch.Tensor  # (B, 3, S, S)
    captions: list[str]
    false_captions: list[str]  # B * K, K per image in order
    cap_ids: torch.Tensor  # (B, CAPTION_LEN): [CLS] caption [SEP] (+ padding)
    cap_mask: torch.Tensor
    false_ids: torch.Tensor  # (B * K, CAPTION_LEN)
    false_mask: torch.Tensor
    q_ids: torch.Tensor  # (B, QUESTION_LEN): [CLS] question [SEP]
    q_mask: torch.Tensor
    a_ids: torch.Tensor  # (B, ANSWER_LEN): [DEC] answer [SEP]
    a_mask: torch.Tensor


def _fixed(tok: BlipTokenizer, rows: list[list[int]], length: int):
    rows = [r + [tok.pad_id] * (length - len(r)) for r in rows]
    ids = torch.tensor(rows, dtype=torch.long)
    return ids, (ids != tok.pad_id).long()


def make_batch(step: int, seed: int, size: int, tok: BlipTokenizer, processor: ImageProcessor,
               two_prob: float, negatives: int) -> Batch:
    rng = random.Random(TRAIN_SEED_BASE * (seed + 1) + step)
    scenes, qas = [], []
    for _ in range(size):
        scene = sample_scene(rng, two_prob)
        scenes.append(scene)
        qas.append(rng.choice(questions(scene, rng)))  # one question per image and step
    captions = [s.caption for s in scenes]
    false = [false_caption(s, rng) for s in scenes for _ in range(negatives)]
    enc = lambda texts: [tok.tok.encode(t).ids for t in texts]  # noqa: E731  [CLS] ... [SEP]
    cap_ids, cap_mask = _fixed(tok, enc(captions), CAPTION_LEN)
    false_ids, false_mask = _fixed(tok, enc(false), CAPTION_LEN)
    q_ids, q_mask = _fixed(tok, enc([qa.question for qa in qas]), QUESTION_LEN)
    a_ids, a_mask = _fixed(tok, [tok.answer_ids(qa.answer) for qa in qas], ANSWER_LEN)
    return Batch(processor([render(s) for s in scenes]), captions, false, cap_ids, cap_mask, false_ids,
                 false_mask, q_ids, q_mask, a_ids, a_mask)
