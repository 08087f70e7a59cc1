"""The `text` graph and the caption decoder, open_clip's TextTransformer and
MultimodalTransformer as CoCa uses them.

The text tower is causal and appends a learned cls token after the text; its output at
the cls (through ln_final and text_projection) is the text embedding, its outputs at the
text positions (without ln_final) are what the multimodal layers read when captioning.
A quirk that changes numbers, kept as open_clip 3.3 has it: the key padding mask is
shifted by one (key 0 is always kept, key k is kept when token k-1 is not the pad id), so
the first padding position after the text is attended and, for a padded text, the cls is
not. The multimodal decoder's layers are a causal self-attention block then a
cross-attention block over the image tokens, then ln_final and the vocabulary projection.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.int8 import Int8Linear
from .blocks import Block, Transformer, layer_norm, quantize_blocks
from .config import CocaConfig


def shifted_key_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, L) bool, True = keep: key 0 always, key k when ids[k-1] is not padding."""
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, 1:] = ids[:, :-1] != pad_id
    return keep


class TextTower(nn.Module):
    def __init__(self, config: CocaConfig):
        super().__init__()
        t = config.text
        self.pad_id = t.pad_id
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.cls_emb = nn.Parameter(torch.empty(t.width))
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length + 1, t.width))
        act = "quick_gelu" if config.quick_gelu else "gelu"
        self.transformer = Transformer(t.width, t.layers, t.heads, t.mlp_ratio, act, t.ls_init_value is not None)
        self.ln_final = layer_norm(t.width)
        if t.proj_bias:
            self.text_projection = nn.Linear(t.width, config.embed_dim)
        else:
            self.text_projection = nn.Parameter(torch.empty(t.width, config.embed_dim))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L), padded as open_clip's tokenizer pads -> the unnormalised embedding (B, E).

        The cls token (position L) reads only the keys the shifted mask keeps, all of them at or
        before the position after the last real token (and its own, for a text filling the
        context); those positions depend only on themselves and earlier ones. So the tower runs
        on them and the cls alone, not on all L + 1 positions, and gives open_clip's numbers."""
        b, n = ids.shape
        real = ids != self.pad_id
        last = n - 1 - real.flip(1).int().argmax(1)  # index of each row's last real token
        m = torch.clamp(last + 2, max=n)  # positions to run: the text and the padding position after it
        width = int(m.max()) + 1  # ... and the cls, at slot m
        slots = torch.arange(width, device=ids.device)[None, :]
        padded = F.pad(ids, (0, width - n))[:, :width] if width > n else ids[:, :width]
        text = slots < m[:, None]
        is_cls = slots == m[:, None]
        x = self.token_embedding(torch.where(text, padded, 0))
        x = torch.where(is_cls[..., None], self.cls_emb.to(x.dtype).view(1, 1, -1), x)
        positions = torch.where(is_cls, n, torch.where(text, slots, 0))
        x = x + self.positional_embedding[positions].to(x.dtype)
        shifted = torch.ones_like(text)
        shifted[:, 1:] = padded[:, :-1] != self.pad_id
        keep = (text & shifted) | (is_cls & real[:, -1:])  # the cls keeps its own key only for a full text
        x = self.transformer(x, key_padding_mask=~keep, causal=True)
        return self.project(self.ln_final(x[torch.arange(b, device=ids.device), m]))


class MultimodalDecoder(nn.Module):
    """`text_decoder`: resblocks (causal self-attention), cross_attn (to the image tokens)."""

    def __init__(self, config: CocaConfig):
        super().__init__()
        m = config.multimodal
        act = "quick_gelu" if config.quick_gelu else "gelu"
        ls = m.ls_init_value is not None
        self.resblocks = nn.ModuleList(Block(m.width, m.heads, 4.0, act, ls) for _ in range(m.layers))
        self.cross_attn = nn.ModuleList(Block(m.width, m.heads, 4.0, act, ls, cross=True) for _ in range(m.layers))
        self.ln_final = layer_norm(m.width)
        self.text_projection = nn.Parameter(torch.empty(m.width, m.vocab_size))
        self.int8_head: Int8Linear | None = None

    def image_kv(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's cross-attention keys/values (S, H, N, Dh) over image tokens (S, N, D)."""
        return [block.attn.kv(block.ln_1_kv(tokens)) for block in self.cross_attn]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8_head is not None:
            return self.int8_head(self.ln_final(x))
        return self.ln_final(x) @ self.text_projection

    def quantize_int8(self) -> None:
        self.int8_head = Int8Linear.of(self.text_projection.t())  # (V, D): the vocabulary projection


class Coca(nn.Module):
    """`visual`, `text`, `text_decoder` and `logit_scale`, as open_clip's CoCa holds them."""

    def __init__(self, config: CocaConfig):
        super().__init__()
        from .vision import VisionTower

        self.config = config
        self.visual = VisionTower(config)
        self.text = TextTower(config)
        self.text_decoder = MultimodalDecoder(config)
        self.logit_scale = nn.Parameter(torch.empty(()))

    def quantize_int8(self, graphs: tuple[str, ...]) -> tuple[str, ...]:
        """int8 linear layers for the named graphs. The decoder runs the text tower's blocks
        before its own, so text and decoder go int8 together. Returns the graphs now int8."""
        done = []
        if "vision" in graphs:
            quantize_blocks(self.visual.transformer.resblocks)
            done.append("vision")
        if {"text", "decoder"} & set(graphs):
            quantize_blocks(self.text.transformer.resblocks)
            quantize_blocks(self.text_decoder.resblocks)
            quantize_blocks(self.text_decoder.cross_attn)
            self.text_decoder.quantize_int8()
            done += ["text", "decoder"]
        return tuple(done)

    def set_attention_backend(self, backend) -> None:
        for module in self.modules():
            if hasattr(module, "backend"):
                module.backend = backend

    def teacher_forced(self, image_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, V) of every position of ids (B, L), the text tower then the decoder, as
        open_clip's forward computes them (used in training and tests)."""
        return self.text_decoder.logits(self.decoder_states(image_tokens, ids))

    def decoder_states(self, image_tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The decoder's last states (B, L, D) before ln_final and the vocabulary projection."""
        t = self.text
        x = t.token_embedding(ids) + t.positional_embedding[: ids.shape[1]].to(t.token_embedding.weight.dtype)
        x = t.transformer(x, key_padding_mask=~shifted_key_mask(ids, t.pad_id), causal=True)
        d = self.text_decoder
        for block, cross in zip(d.resblocks, d.cross_attn):
            x = block(x, causal=True)
            k, v = cross.attn.kv(cross.ln_1_kv(image_tokens))
            x = cross.attend_with(x, cross.attn.backend.prefill(cross.attn.q(cross.ln_1(x)), k, v))
        return x
