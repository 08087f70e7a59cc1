"""BEiT-3: torchscale 0.3's `BEiT3` backbone and unilm's task heads, with their parameter
names (`beit3.*`, `vision_head`, `language_head`, `logit_scale`, `pooler.*`, `head.*`,
`mlm_head`), one module holding whichever heads a checkpoint has.

The graphs are modes of the same weights:
    vision   image tokens through the A experts          (retrieval's image side, captions' image prefix)
    text     text tokens through the B experts           (retrieval's text side, the caption decoder)
    fusion   image then text tokens, one attention      (VQA)

Image tokens are the class token and the patches with their positions added
(`embed_image`); text tokens likewise (`embed_text`). Positions start at row 2 of each
table, as fairseq's do; padded text tokens are zeroed after embedding, as torchscale does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.attention import AttentionBackend
from ...models.int8 import Int8Linear, quantize_linears
from .config import POSITION_OFFSET, Beit3Config
from .multiway import Layer, Multiway


class VisionEmbed(nn.Module):
    def __init__(self, cfg: Beit3Config):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.width))  # BEiT pretraining's; unused here

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixels).flatten(2).transpose(1, 2)  # (B, N-1, D)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)


class Positions(nn.Module):
    """torchscale's MutliwayEmbedding of two position tables: A for images, B for text."""

    def __init__(self, cfg: Beit3Config):
        super().__init__()
        self.A = nn.Embedding(cfg.image_tokens + POSITION_OFFSET, cfg.width)
        self.B = nn.Embedding(cfg.text_positions, cfg.width)


class Encoder(nn.Module):
    def __init__(self, cfg: Beit3Config):
        super().__init__()
        self.embed_positions = Positions(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        d = cfg.width
        self.layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=cfg.eps), d) if cfg.normalize_output else None

    def forward(self, x: torch.Tensor, split: int, key_padding_mask=None, first_only: bool = False) -> torch.Tensor:
        """Final states (B, L, D); first_only: the first token's (B, 1, D), the last layer run
        for it alone (every head but captioning reads only the first token)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, split, key_padding_mask, first_only=first_only and i == last)
        return self.final_norm(x, min(split, x.shape[1]))

    def final_norm(self, x: torch.Tensor, split: int) -> torch.Tensor:
        return self.layer_norm(x, split) if self.layer_norm is not None else x


class Backbone(nn.Module):
    """`beit3.*` in the checkpoints."""

    def __init__(self, cfg: Beit3Config):
        super().__init__()
        self.text_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.vision_embed = VisionEmbed(cfg)
        self.encoder = Encoder(cfg)


class Pooler(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dense = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(self.norm(x[:, 0])))


def vqa_head(dim: int, answers: int) -> nn.Sequential:
    """unilm's classifier: Linear, LayerNorm, GELU, Linear (keys head.0, head.1, head.3)."""
    return nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, answers))


class Beit3Model(nn.Module):
    def __init__(self, cfg: Beit3Config):
        super().__init__()
        self.config = cfg
        d = cfg.width
        self.beit3 = Backbone(cfg)
        if cfg.retrieval:
            self.vision_head = nn.Linear(d, d, bias=False)
            self.language_head = nn.Linear(d, d, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if cfg.answers:
            self.pooler = Pooler(d)
            self.head = vqa_head(d, cfg.answers)
        if cfg.caption:
            self.mlm_head = nn.Linear(d, cfg.vocab_size)

    @property
    def layers(self) -> nn.ModuleList:
        return self.beit3.encoder.layers

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        for layer in self.layers:
            layer.self_attn.backend = backend

    def pack(self) -> None:
        for layer in self.layers:
            layer.self_attn.pack()

    def quantize_int8(self) -> None:
        """int8 linear layers in every layer and the captioning head. One backbone runs every
        graph, so they go int8 together; the retrieval and VQA heads stay float."""
        for layer in self.layers:
            layer.self_attn.quantize_int8()
            quantize_linears(layer.ffn)
        if self.config.caption:
            self.mlm_head = Int8Linear(self.mlm_head)

    # -- embeddings -----------------------------------------------------------------------

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> image tokens (B, N, D) with their positions."""
        x = self.beit3.vision_embed(pixels)
        table = self.beit3.encoder.embed_positions.A.weight
        return x + table[POSITION_OFFSET:POSITION_OFFSET + x.shape[1]]

    def embed_text(self, ids: torch.Tensor, positions: torch.Tensor | None = None,
                   padding: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> text tokens (B, T, D); `positions` (B|1, T) are text indices (0 = first)."""
        table = self.beit3.encoder.embed_positions.B.weight
        if positions is None:
            pos = table[POSITION_OFFSET:POSITION_OFFSET + ids.shape[1]]
        else:
            pos = F.embedding(positions + POSITION_OFFSET, table)
        x = self.beit3.text_embed(ids) + pos
        if padding is not None:
            x = x * (~padding)[..., None].to(x.dtype)
        return x

    # -- the three modes ------------------------------------------------------------------

    def vision(self, tokens: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """Image tokens (B, N, D) -> final states (B, N, D) (first_only: (B, 1, D))."""
        return self.beit3.encoder(tokens, tokens.shape[1], first_only=first_only)

    def text(self, ids: torch.Tensor, padding: torch.Tensor | None = None, first_only: bool = False) -> torch.Tensor:
        """(B, T) ids, padding (B, T) True = pad -> final states (B, T, D) (first_only: (B, 1, D))."""
        return self.beit3.encoder(self.embed_text(ids, padding=padding), 0, _mask_or_none(padding), first_only)

    def fusion(self, image: torch.Tensor, ids: torch.Tensor, padding: torch.Tensor | None = None,
               first_only: bool = False) -> torch.Tensor:
        """Image tokens (B, N, D) and text (B, T) -> final states (B, N + T, D) (first_only: (B, 1, D))."""
        n = image.shape[1]
        x = torch.cat([image, self.embed_text(ids, padding=padding)], dim=1)
        mask = None
        if padding is not None and bool(padding.any()):
            mask = torch.cat([padding.new_zeros(padding.shape[0], n), padding], dim=1)
        return self.beit3.encoder(x, n, mask, first_only)

    # -- heads ----------------------------------------------------------------------------

    def image_embedding(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_head(states[:, 0]).float(), dim=-1)

    def text_embedding(self, states: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.language_head(states[:, 0]).float(), dim=-1)

    def answer_logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooler(states)).float()

    def caption_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Final text states (..., D) -> masked-LM logits (..., V) float32."""
        return self.mlm_head(states).float()


def _mask_or_none(padding: torch.Tensor | None) -> torch.Tensor | None:
    return padding if padding is not None and bool(padding.any()) else None
