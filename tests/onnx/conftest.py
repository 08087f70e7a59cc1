"""Tiny random BLIP folders with their ONNX exports, built once per session (exports take seconds)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch's ONNX exporter

from tests.helpers.own_blip import make_folder, tiny_config  # noqa: E402
from vlserve.families.blip.engine import BlipEngine, EngineOptions  # noqa: E402

ONNX = ("vision", "text", "fusion")


def odd_config():
    """Head dims 12 and 6, a 40-pixel image, an MLP width of 37: nothing a power of two."""
    cfg = tiny_config(width=36, image=40)
    vision = dataclasses.replace(cfg.vision, num_attention_heads=3, intermediate_size=37)
    text = dataclasses.replace(cfg.text, num_attention_heads=6, intermediate_size=37)
    return dataclasses.replace(cfg, vision=vision, text=text)


class Pair:
    """One folder served twice: every encoder graph on ONNX Runtime, and all on torch."""

    def __init__(self, folder):
        self.folder = folder
        self.onnx = BlipEngine(folder, EngineOptions(onnx_graphs=ONNX))
        self.torch = BlipEngine(folder)


_PAIRS: dict[str, Pair] = {}


def _pair(name: str, tmp_path_factory) -> Pair:
    if name not in _PAIRS:
        config = odd_config() if name == "odd" else None
        _PAIRS[name] = Pair(make_folder(tmp_path_factory.mktemp(name) / "m", config=config))
    return _PAIRS[name]


@pytest.fixture(scope="session", params=["pow2", "odd"])
def pair(request, tmp_path_factory) -> Pair:
    return _pair(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def pow2(tmp_path_factory) -> Pair:
    """Its folder's onnx/ holds every encoder graph: copy it with mtimes (copytree) to reuse them."""
    return _pair("pow2", tmp_path_factory)
