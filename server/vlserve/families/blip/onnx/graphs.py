"""The encoder graphs as export-ready modules: plain tensors in and out, named dynamic axes.

    vision  pixel_values (B, 3, S, S)                          -> image_states (B, 1 + N, Dv)
    text    input_ids, attention_mask (B, L)                    -> text_embeds (B, E), normalised
    fusion  image_states (B, 1 + N, Dv), input_ids, attention_mask (B, L)
                                                                -> hidden (B, L, Dt) [, itm_logits (B, 2)]

Exports trace the `eager` attention backend: plain matmul/softmax/where that every ONNX
Runtime provider runs, without the sdpa backend's shape-dependent fast paths.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn

from ....engine.onnx.runtime import GraphSpec
from ....models.attention import EagerAttention
from ..model import Blip

ENCODER_GRAPHS = ("vision", "text", "fusion")


def graph_spec(model: Blip, graph: str) -> GraphSpec:
    cfg = model.config
    if graph not in ENCODER_GRAPHS:
        raise ValueError(f"unknown encoder graph {graph!r}; choose from {', '.join(ENCODER_GRAPHS)}")
    if graph not in model.components.graphs:
        raise ValueError(f"this checkpoint has no '{graph}' graph (it has: {', '.join(model.components.graphs)})")
    tokens = ("batch", "length")
    states = ("batch", cfg.vision.num_patches + 1, cfg.vision.hidden_size)
    if graph == "vision":
        size = cfg.vision.image_size
        return GraphSpec(graph, {"pixel_values": ("batch", 3, size, size)}, {"image_states": states})
    if graph == "text":
        return GraphSpec(graph, {"input_ids": tokens, "attention_mask": tokens},
                         {"text_embeds": ("batch", cfg.image_text_hidden_size)})
    outputs = {"hidden": ("batch", "length", cfg.text.hidden_size)}
    if model.itm_head is not None:
        outputs["itm_logits"] = ("batch", 2)
    return GraphSpec(graph, {"image_states": states, "input_ids": tokens, "attention_mask": tokens}, outputs)


class VisionGraph(nn.Module):
    def __init__(self, model: Blip):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_images(pixel_values)


class TextGraph(nn.Module):
    def __init__(self, model: Blip):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.text_embeddings(input_ids, attention_mask)


class FusionGraph(nn.Module):
    def __init__(self, model: Blip):
        super().__init__()
        self.model = model

    def forward(self, image_states, input_ids, attention_mask):
        hidden = self.model.fuse(image_states, input_ids, attention_mask)
        if self.model.itm_head is None:
            return hidden
        return hidden, self.model.itm_head(hidden[:, 0])


MODULES = {"vision": VisionGraph, "text": TextGraph, "fusion": FusionGraph}


def graph_module(model: Blip, graph: str) -> nn.Module:
    return MODULES[graph](model).eval()


def example_inputs(model: Blip, spec: GraphSpec, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs in the model's dtype; rows after the first are right-padded to varied lengths."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    sizes = {"batch": batch, "length": length}
    out = {}
    for name, dims in spec.inputs.items():
        shape = tuple(sizes.get(d, d) for d in dims)
        if name == "input_ids":
            out[name] = torch.randint(5, model.config.text.vocab_size, shape, generator=g)
        elif name == "attention_mask":
            keep = torch.randint(1, length + 1, (batch,), generator=g)
            keep[0] = length
            out[name] = (torch.arange(length)[None, :] < keep[:, None]).long()  # (B, L)
        else:
            out[name] = torch.randn(shape, generator=g).to(dtype)
    return out


@contextmanager
def eager_attention(model: Blip):
    """Trace with the eager backend, then give every module its own backend back."""
    saved = [(m, m.backend) for m in model.modules() if hasattr(m, "backend")]
    model.set_attention_backend(EagerAttention())
    try:
        yield
    finally:
        for module, backend in saved:
            module.backend = backend
