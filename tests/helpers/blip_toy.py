"""The shipped blip-toy and held-out shapes-world scenes, shared by its model, ONNX and HTTP tests."""

import io
from pathlib import Path

import pytest

from vlserve.shapes import generate, render

MODEL = Path(__file__).resolve().parents[2] / "model_repo" / "blip-toy"

needs_weights = pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(),
                                   reason="model_repo/blip-toy has no trained weights yet")


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def held_out_world(n: int, seed: int):
    """(scene, questions) pairs and each scene as PNG bytes, as a client would send it.
    Training draws seeds >= 1,000,000, so small seeds are never seen in training."""
    scenes = generate(n, seed=seed)
    return scenes, [png(render(s)) for s, _ in scenes]
