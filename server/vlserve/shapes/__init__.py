"""The shapes world: a seeded generator of simple scenes with captions and Q/A pairs,
used to train, test and demo the shipped toy models (`blip-toy`, `coca-toy`)."""

from .files import write_scenes
from .negatives import false_caption
from .render import render, shape_mask
from .world import (ANSWERS, BACKGROUNDS, CANVAS, COLORS, QUESTION_TYPES, SHAPES, SIZES, QA, Obj, Scene,
                    generate, questions, relation_of, sample_scene, swap_colors, vocabulary)

__all__ = ["ANSWERS", "BACKGROUNDS", "CANVAS", "COLORS", "QUESTION_TYPES", "SHAPES", "SIZES", "QA", "Obj",
           "Scene", "false_caption", "generate", "questions", "relation_of", "render", "sample_scene",
           "shape_mask", "swap_colors", "vocabulary", "write_scenes"]
