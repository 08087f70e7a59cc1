"""Training batches drawn on the fly from the shapes world, and false captions as hard negatives.

Step k of a run with seed s draws its scenes from seed TRAIN_SEED_BASE * (s + 1) + k: every
training seed is >= TRAIN_SEED_BASE, so seeds below it (evaluation, tests) are never trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from vlserve.engine.images import ImageProcessor
from vlserve.families.blip.tokenizer import BlipTokenizer
from vlserve.shapes import false_caption, questions, render, sample_scene

TRAIN_SEED_BASE = 1_000_000
CAPTION_LEN = 12  # [CLS] + 10 words + [SEP]: the longest caption
QUESTION_LEN = 9
ANSWER_LEN = 3  # [DEC] answer [SEP]


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
