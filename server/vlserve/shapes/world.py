"""The shapes world: scenes of one or two flat shapes, their canonical captions and
question/answer pairs. This module is the spec in code (see model_repo/blip-toy/README.md).

Everything is drawn from one `random.Random`, so a seed fixes the scenes; scenes are
drawn one after another, so the first k scenes of a seed do not depend on how many follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

CANVAS = 128
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
SIZES = {"small": (20, 28), "large": (40, 52)}  # box side in px, inclusive
MIN_GAP = 4  # px between two boxes
MIN_RELATION_MARGIN = 12  # px: ||dx| - |dy|| between box centres, so left-of vs above is clear

QUESTION_TYPES = ("color", "shape", "count", "exists", "size")
COUNTS = ("one", "two")
ANSWERS = (*COLORS, *SHAPES, *COUNTS, "yes", "no", *SIZES)
CAPTION_WORDS = ("a", *SIZES, *COLORS, *SHAPES, "left", "of", "above")
QUESTION_WORDS = ("what", "color", "is", "the", "shape", "object", "how", "many", "shapes", "are",
                  "there", "size", "?")


def vocabulary() -> list[str]:
    """Every word of the world's captions, questions and answers, in a fixed order."""
    return list(dict.fromkeys(CAPTION_WORDS + QUESTION_WORDS + ANSWERS))


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    x: int  # box top-left, px
    y: int
    side: int  # box side, px

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.side / 2, self.y + self.side / 2

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class QA:
    type: str
    question: str
    answer: str


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...]  # in caption order: left (or upper) object first
    relation: str | None  # "left of" | "above" | None for one object

    @property
    def caption(self) -> str:
        return caption_of(self.objects, self.relation)


def caption_of(objects, relation) -> str:
    if len(objects) == 1:
        return objects[0].phrase
    return f"{objects[0].phrase} {relation} {objects[1].phrase}"


def box_gap(a: Obj, b: Obj) -> int:
    """Empty pixels between two boxes along the axis where they are farthest apart (< 0: overlap)."""
    gap_x = max(b.x - (a.x + a.side), a.x - (b.x + b.side))
    gap_y = max(b.y - (a.y + a.side), a.y - (b.y + b.side))
    return max(gap_x, gap_y)


def relation_of(a: Obj, b: Obj) -> tuple[str, Obj, Obj]:
    """The caption's rule: mostly-horizontal pairs read left to right, others top to bottom."""
    (ax, ay), (bx, by) = a.centre, b.centre
    if abs(bx - ax) >= abs(by - ay):
        return ("left of", a, b) if ax < bx else ("left of", b, a)
    return ("above", a, b) if ay < by else ("above", b, a)


def _place(rng: random.Random, shape: str, color: str, size: str) -> Obj:
    side = rng.randint(*SIZES[size])
    return Obj(shape, color, size, rng.randint(0, CANVAS - side), rng.randint(0, CANVAS - side), side)


def sample_scene(rng: random.Random, two_prob: float = 0.5) -> Scene:
    background = rng.choice(list(BACKGROUNDS))
    if rng.random() >= two_prob:
        obj = _place(rng, rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(list(SIZES)))
        return Scene(background, (obj,), None)
    shapes = rng.sample(SHAPES, 2)
    colors = rng.sample(list(COLORS), 2)
    sizes = [rng.choice(list(SIZES)) for _ in range(2)]
    while True:  # rejection sampling of positions (and sides); succeeds within a few tries
        a, b = (_place(rng, s, c, z) for s, c, z in zip(shapes, colors, sizes))
        (ax, ay), (bx, by) = a.centre, b.centre
        if box_gap(a, b) >= MIN_GAP and abs(abs(bx - ax) - abs(by - ay)) >= MIN_RELATION_MARGIN:
            relation, first, second = relation_of(a, b)
            return Scene(background, (first, second), relation)


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    """One question of each type; the yes/no question is `yes` with probability 1/2."""
    objs = scene.objects
    pick = rng.choice(objs)
    out = [QA("color", f"what color is the {pick.shape}?", pick.color)]
    pick = rng.choice(objs)
    out.append(QA("shape", f"what shape is the {pick.color} object?", pick.shape))
    out.append(QA("count", "how many shapes are there?", COUNTS[len(objs) - 1]))
    present = {(o.color, o.shape) for o in objs}
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
        answer = "yes"
    else:
        color, shape = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in present])
        answer = "no"
    out.append(QA("exists", f"is there a {color} {shape}?", answer))
    pick = rng.choice(objs)
    out.append(QA("size", f"what size is the {pick.color} {pick.shape}?", pick.size))
    return out


def swap_colors(scene: Scene) -> str:
    """The caption with the two objects' colours exchanged (an ITM hard negative)."""
    a, b = scene.objects
    return caption_of((replace(a, color=b.color), replace(b, color=a.color)), scene.relation)


def other_relation(relation: str) -> str:
    return "above" if relation == "left of" else "left of"


def flip_relation(scene: Scene) -> str:
    """The two-object caption with the other relation, the objects in the same order."""
    return caption_of(scene.objects, other_relation(scene.relation))


def generate(n: int, seed: int, two_prob: float = 0.5) -> list[tuple[Scene, list[QA]]]:
    """n scenes and their questions, fixed by `seed`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng, two_prob)
        out.append((scene, questions(scene, rng)))
    return out
