"""The shipped toy models (model_repo/*-toy) and held-out shapes-world scenes, shared by their
model, ONNX and HTTP tests. Training draws seeds >= 1,000,000, so small seeds are held out."""

from pathlib import Path

import pytest

from vlserve.shapes.evaluation import world_images

REPO = Path(__file__).resolve().parents[2] / "model_repo"
WEIGHTS = {"blip-toy": "model.safetensors", "coca-toy": "open_clip_model.safetensors", "beit3-toy": "beit3.pth"}


def trained(name: str) -> bool:
    return (REPO / name / WEIGHTS[name]).is_file()


def needs(name: str):
    return pytest.mark.skipif(not trained(name), reason=f"model_repo/{name} has no trained weights yet")


def held_out_world(n: int, seed: int):
    """(scene, questions) pairs and each scene as PNG bytes, as a client would send it."""
    return world_images(n, seed)
