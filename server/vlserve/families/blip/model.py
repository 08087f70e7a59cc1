"""The BLIP container: which sub-networks a checkpoint holds decides which graphs it serves.

Components (named like the checkpoints' top-level prefixes):
  vision        ViT                                  -> graph `vision`
  text_encoder  text transformer (+ cross-attention)  -> graphs `text` (with projections), `fusion`
  projections   vision_proj, text_proj               -> ITC
  itm_head      2-way match head                      -> ITM
  text_decoder  causal LM with cross-attention        -> graph `decoder`
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.attention import AttentionBackend
from ...models.int8 import quantize_linears
from .config import BlipConfig
from .text import TextDecoder, TextTransformer
from .vision import VisionTransformer


@dataclass(frozen=True)
class Components:
    text_encoder: bool = False
    text_encoder_cross: bool = False
    projections: bool = False
    itm_head: bool = False
    text_decoder: bool = False
    # what the decoder was trained to read: image states ("caption") and/or question states
    # ("answer"); BLIP's captioning and VQA checkpoints hold different decoders
    decoder_roles: tuple[str, ...] = ("caption",)

    @property
    def graphs(self) -> tuple[str, ...]:
        graphs = ["vision"]
        if self.text_encoder and self.projections:
            graphs.append("text")
        if self.text_encoder and self.text_encoder_cross:
            graphs.append("fusion")
        if self.text_decoder:
            graphs.append("decoder")
        return tuple(graphs)


def _absorbed_kv(name: str) -> bool:
    """The decoder's absorbed cross-attention (cross.py) reads these weights themselves."""
    return name.endswith(("crossattention.self.key", "crossattention.self.value"))


class Blip(nn.Module):
    def __init__(self, config: BlipConfig, components: Components):
        super().__init__()
        self.config = config
        self.components = components
        self.vision = VisionTransformer(config.vision)
        self.text_encoder = (TextTransformer(config.text, cross=components.text_encoder_cross)
                             if components.text_encoder else None)
        e = config.image_text_hidden_size
        self.vision_proj = nn.Linear(config.vision.hidden_size, e) if components.projections else None
        self.text_proj = nn.Linear(config.text.hidden_size, e) if components.projections else None
        self.itm_head = nn.Linear(config.text.hidden_size, 2) if components.itm_head else None
        self.text_decoder = TextDecoder(config.text) if components.text_decoder else None

    def quantize_int8(self, graphs: tuple[str, ...]) -> tuple[str, ...]:
        """int8 linear layers for the named graphs' modules (text and fusion share the text
        encoder); the projections and the ITM head stay float. Returns the graphs now int8."""
        modules = {"vision": self.vision, "text": self.text_encoder, "fusion": self.text_encoder,
                   "decoder": self.text_decoder}
        done = set()
        for graph in graphs:
            module = modules.get(graph)
            if module is None or graph not in self.components.graphs:
                continue
            quantize_linears(module, keep=_absorbed_kv if module is self.text_decoder else lambda name: False)
            done.update(g for g, m in modules.items() if m is module and g in self.components.graphs)
        return tuple(g for g in self.components.graphs if g in done)

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = backend

    # -- graphs -------------------------------------------------------------------------

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """`vision`: (B, 3, S, S) -> (B, 1 + N, Dv)."""
        return self.vision(pixels)

    def image_embeddings(self, image_states: torch.Tensor) -> torch.Tensor:
        """Normalised ITC embeddings (B, E) from the CLS state."""
        return F.normalize(self.vision_proj(image_states[:, 0]), dim=-1)

    def text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`text`: unimodal, bidirectional; normalised ITC embeddings (B, E)."""
        hidden = self.text_encoder(input_ids, attention_mask)
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def fuse(self, image_states, input_ids, attention_mask) -> torch.Tensor:
        """`fusion`: text states grounded in the image, (B, L, Dt)."""
        return self.text_encoder(input_ids, attention_mask, encoder_states=image_states)

    def itm_logits(self, image_states, input_ids, attention_mask) -> torch.Tensor:
        """ITM logits (B, 2) for pairs; softmax(.)[:, 1] is the match probability."""
        return self.itm_head(self.fuse(image_states, input_ids, attention_mask)[:, 0])
