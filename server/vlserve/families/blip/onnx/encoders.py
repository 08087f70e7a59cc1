"""The encoder graphs one engine runs on ONNX Runtime, with the engine's calling conventions."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model import Blip
from .export import ensure_exports
from .graphs import ENCODER_GRAPHS, graph_spec
from ....engine.onnx.quantize import ensure_int8
from ....engine.onnx.runtime import OrtGraph, OrtOptions


class OnnxEncoders:
    """Sessions for the listed graphs that the checkpoint holds, exported first where missing."""

    def __init__(self, model: Blip, folder: Path, graphs, out: Path, device: torch.device, dtype: torch.dtype,
                 options: OrtOptions = OrtOptions(), int8: tuple[str, ...] = ()):
        unknown = sorted(set(graphs) - set(ENCODER_GRAPHS))
        if unknown:
            raise ValueError(f"only the encoder graphs ({', '.join(ENCODER_GRAPHS)}) run on ONNX Runtime, "
                             f"not {', '.join(unknown)}")
        names = [g for g in ENCODER_GRAPHS if g in graphs and g in model.components.graphs]
        paths = ensure_exports(model, folder, names, out, dtype)
        paths.update({g: ensure_int8(paths[g]) for g in names if g in int8})
        self.int8 = tuple(g for g in names if g in int8)
        cache = out / "trt-cache" if os.access(out, os.W_OK) else None
        max_length = model.config.text.max_position_embeddings
        self.sessions = {g: OrtGraph(paths[g], graph_spec(model, g), device, options, max_length, cache)
                         for g in names}

    def __contains__(self, graph: str) -> bool:
        return graph in self.sessions

    @property
    def providers(self) -> dict[str, str]:
        return {g: s.provider for g, s in self.sessions.items()}

    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.sessions["vision"]({"batch": pixels.shape[0]}, pixel_values=pixels)
        return out["image_states"]

    def text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.sessions["text"]({"batch": ids.shape[0]}, input_ids=ids, attention_mask=mask)
        return out["text_embeds"]

    def fusion(self, states: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        """(hidden (B, L, Dt), ITM logits (B, 2) or None when the checkpoint has no ITM head)."""
        sizes = {"batch": ids.shape[0], "length": ids.shape[1]}
        out = self.sessions["fusion"](sizes, image_states=states, input_ids=ids, attention_mask=mask)
        return out["hidden"], out.get("itm_logits")
