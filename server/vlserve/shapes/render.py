"""Drawing scenes: plain fills, no outlines, no anti-aliasing.

Shapes are rasterised with numpy (a pixel belongs to a shape when its centre does)
rather than PIL's drawing primitives, whose edge rules changed between Pillow releases:
the same seed gives the same pixels everywhere.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, CANVAS, COLORS, Obj, Scene

_CENTRES = np.arange(CANVAS) + 0.5  # pixel centres along one axis


def shape_mask(obj: Obj) -> np.ndarray:
    """(CANVAS, CANVAS) bool: the pixels the object covers."""
    s = obj.side
    u = (_CENTRES[None, :] - obj.x) / s  # box-relative coordinates in [0, 1] inside the box
    v = (_CENTRES[:, None] - obj.y) / s
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if obj.shape == "square":
        return inside
    if obj.shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if obj.shape == "triangle":  # apex at the top centre, base along the bottom edge
        return inside & (np.abs(u - 0.5) <= v / 2)
    raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene) -> Image.Image:
    canvas = np.empty((CANVAS, CANVAS, 3), dtype=np.uint8)
    canvas[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        canvas[shape_mask(obj)] = COLORS[obj.color]
    return Image.fromarray(canvas)  # (H, W, 3) uint8 -> RGB
