"""Photo-like test images for the preprocessing parity tests: smooth gradients plus noise,
saved and read back as JPEG, at odd sizes and aspect ratios."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_like(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    y, x = np.mgrid[0: size[1], 0: size[0]]
    base = np.stack([x * 255 / size[0], y * 255 / size[1], (x + y) * 127 / sum(size)], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
