"""Near-miss captions: false captions that differ from a scene's true one in one detail,
the hard negatives the toy models train their contrastive and match heads on."""

from __future__ import annotations

import random
from dataclasses import replace

from .world import COLORS, SHAPES, SIZES, Scene, caption_of, other_relation


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
                text = caption_of([a, b] if rng.random() < 0.5 else [b, a], other_relation(rel))
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
