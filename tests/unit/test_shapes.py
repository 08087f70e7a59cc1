"""The shapes-world generator against its public spec (model_repo/blip-toy/README.md)."""

import argparse
import json
import re

import numpy as np
import pytest
from PIL import Image

from vlserve.shapes import (ANSWERS, COLORS, SHAPES, SIZES, Obj, generate, render, shape_mask, swap_colors,
                            vocabulary)
from vlserve.shapes.command import register
from vlserve.shapes.world import flip_relation

RGB = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (235, 200, 20)}
BG = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
OBJ = r"a (small|large) (red|green|blue|yellow) (circle|square|triangle)"
CAPTION = re.compile(rf"^{OBJ}( (left of|above) {OBJ})?$")


@pytest.fixture(scope="module")
def world():
    return generate(600, seed=11)


def test_palette_matches_the_spec():
    assert dict(COLORS) == RGB and set(SHAPES) == {"circle", "square", "triangle"}
    assert SIZES == {"small": (20, 28), "large": (40, 52)}


def test_pixels_are_plain_fills_of_the_spec_colours(world):
    for scene, _ in world[:80]:
        img = np.asarray(render(scene))
        assert img.shape == (128, 128, 3)
        colours = {tuple(c) for c in img.reshape(-1, 3)}
        assert colours == {BG[scene.background]} | {RGB[o.color] for o in scene.objects}
        for o in scene.objects:
            box = img[o.y:o.y + o.side, o.x:o.x + o.side]
            covered = (box == RGB[o.color]).all(-1)
            assert covered.sum() == shape_mask(o).sum()  # everything of the object lies inside its box


def test_shapes_fill_their_boxes_as_specified():
    for side in (20, 33, 52):
        sq, ci, tr = (shape_mask(Obj(s, "red", "large", 10, 20, side)) for s in ("square", "circle", "triangle"))
        assert sq.sum() == side * side
        assert sq[20:20 + side, 10:10 + side].all()
        assert abs(ci.sum() / side ** 2 - np.pi / 4) < 0.04
        assert abs(tr.sum() / side ** 2 - 0.5) < 0.04
        rows = tr.sum(axis=1)[20:20 + side]
        assert rows[0] <= 2 and rows[-1] >= side - 1  # apex at the top, base along the bottom
        top = 20 + np.nonzero(rows)[0][0]
        cols = np.nonzero(tr[top])[0]
        assert top <= 21 and abs(cols.mean() + 0.5 - (10 + side / 2)) <= 0.5  # apex at the top centre
        assert ci[20 + side // 2, 10] and not ci[20, 10]  # touches the sides, not the corners


def test_sizes_boxes_and_gaps(world):
    for scene, _ in world:
        assert 1 <= len(scene.objects) <= 2
        for o in scene.objects:
            lo, hi = SIZES[o.size]
            assert lo <= o.side <= hi
            assert 0 <= o.x and o.x + o.side <= 128 and 0 <= o.y and o.y + o.side <= 128
        if len(scene.objects) == 2:
            a, b = scene.objects
            gap_x = max(b.x - a.x - a.side, a.x - b.x - b.side)
            gap_y = max(b.y - a.y - a.side, a.y - b.y - b.side)
            assert max(gap_x, gap_y) >= 4
            assert a.shape != b.shape and a.color != b.color


def test_relation_rule_and_caption_order(world):
    seen = set()
    for scene, _ in world:
        assert CAPTION.match(scene.caption), scene.caption
        if len(scene.objects) == 1:
            o = scene.objects[0]
            assert scene.caption == f"a {o.size} {o.color} {o.shape}"
            continue
        first, second = scene.objects
        dx = (second.x + second.side / 2) - (first.x + first.side / 2)
        dy = (second.y + second.side / 2) - (first.y + first.side / 2)
        assert abs(abs(dx) - abs(dy)) >= 12
        relation = "left of" if abs(dx) >= abs(dy) else "above"
        assert (dx > 0) if relation == "left of" else (dy > 0)
        assert scene.caption == (f"a {first.size} {first.color} {first.shape} {relation} "
                                 f"a {second.size} {second.color} {second.shape}")
        seen.add(relation)
    assert seen == {"left of", "above"}
    assert 0.4 < sum(len(s.objects) == 2 for s, _ in world) / len(world) < 0.6


def test_questions_and_answers(world):
    yes = 0
    for scene, qas in world:
        assert [q.type for q in qas] == ["color", "shape", "count", "exists", "size"]
        objs = scene.objects
        by_shape = {o.shape: o for o in objs}
        by_color = {o.color: o for o in objs}
        for qa in qas:
            assert qa.answer in ANSWERS and qa.question.endswith("?")
            if m := re.fullmatch(r"what color is the (\w+)\?", qa.question):
                assert qa.answer == by_shape[m[1]].color
            elif m := re.fullmatch(r"what shape is the (\w+) object\?", qa.question):
                assert qa.answer == by_color[m[1]].shape
            elif qa.question == "how many shapes are there?":
                assert qa.answer == ["one", "two"][len(objs) - 1]
            elif m := re.fullmatch(r"is there a (\w+) (\w+)\?", qa.question):
                present = any(o.color == m[1] and o.shape == m[2] for o in objs)
                assert qa.answer == ("yes" if present else "no")
                yes += present
            elif m := re.fullmatch(r"what size is the (\w+) (\w+)\?", qa.question):
                o = by_color[m[1]]
                assert o.shape == m[2] and qa.answer == o.size
            else:
                raise AssertionError(qa.question)
    assert 0.45 < yes / len(world) < 0.55


def test_vocabulary_covers_every_text(world):
    words = set(vocabulary())
    assert len(words) == len(vocabulary())
    for scene, qas in world:
        texts = [scene.caption] + [q.question.replace("?", " ?") for q in qas] + [q.answer for q in qas]
        assert set(" ".join(texts).split()) <= words


def test_swap_colors():
    scene = next(s for s, _ in generate(20, seed=3) if len(s.objects) == 2)
    a, b = scene.objects
    swapped = swap_colors(scene)
    assert swapped != scene.caption and CAPTION.match(swapped)
    assert swapped.replace(a.color, "#").replace(b.color, a.color).replace("#", b.color) == scene.caption


def test_flip_relation():
    scene = next(s for s, _ in generate(20, seed=3) if len(s.objects) == 2)
    flipped = flip_relation(scene)
    assert flipped != scene.caption and CAPTION.match(flipped)
    assert {r for r in ("left of", "above") if r in flipped} == {"left of", "above"} - {scene.relation}
    assert flipped.replace("left of", "#").replace("above", "left of").replace("#", "above") == scene.caption


def test_determinism_by_seed():
    a, b = generate(30, seed=5), generate(30, seed=5)
    assert [s for s, _ in a] == [s for s, _ in b] and [q for _, q in a] == [q for _, q in b]
    assert np.array_equal(np.asarray(render(a[7][0])), np.asarray(render(b[7][0])))
    assert generate(10, seed=5) == a[:10]  # a prefix does not depend on n
    assert [s.caption for s, _ in generate(30, seed=6)] != [s.caption for s, _ in a]


def test_command_writes_pngs_and_json(tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shapes", "--n", "4", "--seed", "9", "--out", str(tmp_path)])
    summary = args.run(args)
    json.dumps(summary)
    assert summary["n"] == 4 and summary["seed"] == 9
    index = json.loads((tmp_path / "scenes.json").read_text())
    expected = generate(4, seed=9)
    assert len(index["scenes"]) == 4
    for rec, (scene, qas) in zip(index["scenes"], expected):
        assert rec["caption"] == scene.caption
        assert [(q["question"], q["answer"]) for q in rec["qa"]] == [(q.question, q.answer) for q in qas]
        png = np.asarray(Image.open(tmp_path / rec["image"]).convert("RGB"))
        assert np.array_equal(png, np.asarray(render(scene)))


def test_learning_rate_schedule_and_warm_restart():
    from types import SimpleNamespace

    from vlserve.shapes.training import lr_at

    plain = SimpleNamespace(lr=1e-3, warmup=10, steps=100, min_lr_ratio=0.1, restart_at=None)
    lrs = [lr_at(s, plain) for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    restarted = SimpleNamespace(**{**vars(plain), "steps": 160, "restart_at": 100})
    again = [lr_at(s, restarted) for s in range(100, 160)]
    assert again[0] == pytest.approx(1e-4) and again[9] == pytest.approx(1e-3)  # a fresh warm-up from step 100
    assert all(a >= b for a, b in zip(again[10:], again[11:])) and again[-1] == pytest.approx(1e-4, rel=0.05)
