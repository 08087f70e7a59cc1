"""CoCa's caption decoder as the shared decode loop drives it (engine/family.py DecoderGraph).

A caption row runs the text tower's causal layers and then the multimodal layers, so its
self-attention cache has both: the text tower's layers first, then the multimodal ones
(one geometry for all: the two are built equally wide with equal heads). A source is one
image's decoder tokens; what is kept per source is each multimodal layer's cross-attention
keys and values over them, computed once and read by all of the image's beams and samples.
The text tower's shifted key mask (text.py) needs the rows' token histories, which the loop
passes to every step.
"""

from __future__ import annotations

import torch

from ...engine.family import SourceView
from .text import Coca, shifted_key_mask


class CocaDecoderGraph:
    source_length_dim = 2  # per layer keys then values (S, H, N, Dh)

    def __init__(self, model: Coca, eos_id: int):
        t, m = model.config.text, model.config.multimodal
        if t.heads != m.heads or t.width != m.width:
            raise ValueError("the text tower and the multimodal decoder differ in heads or width")
        self.model, self.eos_id = model, eos_id
        self.layers = t.layers + m.layers
        self.heads, self.head_dim = m.heads, m.width // m.heads
        self.max_positions = t.context_length
        weight = model.text_decoder.text_projection
        self.device, self.dtype = weight.device, weight.dtype
        self.pad_id = t.pad_id

    @property
    def _blocks(self):
        return list(self.model.text.transformer.resblocks) + list(self.model.text_decoder.resblocks)

    def source_tensors(self, states: torch.Tensor) -> list[torch.Tensor]:
        kv = self.model.text_decoder.image_kv(states.to(self.dtype))
        return [k for k, _ in kv] + [v for _, v in kv]

    def _cross(self, x: torch.Tensor, layer: int, sources: SourceView, step: bool) -> torch.Tensor:
        cross = self.model.text_decoder.cross_attn[layer]
        half = len(sources.tensors) // 2
        k, v = sources.tensors[layer], sources.tensors[half + layer]
        q = cross.attn.q(cross.ln_1(x))  # (R, H, 1 or Lp, Dh)
        if step:
            groups = sources.groups or (None, None, 1)
            ctx = cross.attn.backend.decode_cross(q[:, :, 0], k, v, sources.pad, *groups)[:, :, None]
        else:
            ctx = cross.attn.backend.prefill(q, k, v, sources.pad)
        return cross.attend_with(x, ctx)

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        t = self.model.text
        return t.token_embedding(ids) + t.positional_embedding[positions].to(t.token_embedding.weight.dtype)

    def prefill(self, ids, lengths, cache, sources: SourceView) -> torch.Tensor:
        n, lp = ids.shape
        x = self._embed(ids, torch.arange(lp, device=ids.device))  # (n, Lp, D)
        text_layers = self.model.config.text.layers
        drop = ~shifted_key_mask(ids, self.pad_id)  # prompts are right-padded: causality hides the padding
        for i, (block, (ck, cv)) in enumerate(zip(self._blocks, cache)):
            q, k, v = block.attn.qkv(block.ln_1(x))
            ck[:, :, :lp], cv[:, :, :lp] = k, v
            mask = drop if i < text_layers and bool(drop.any()) else None
            x = block.attend_with(x, block.attn.backend.prefill(q, k, v, mask, causal=True))
            if i >= text_layers:
                x = self._cross(x, i - text_layers, sources, step=False)
        last = x[torch.arange(n, device=ids.device), lengths - 1]  # (n, D)
        return self.model.text_decoder.logits(last).float()

    def step(self, tokens, positions, cache, sources: SourceView, history=None) -> torch.Tensor:
        r = tokens.shape[0]
        rows = torch.arange(r, device=tokens.device)
        x = self._embed(tokens, positions)[:, None]  # (R, 1, D)
        text_layers = self.model.config.text.layers
        keep = None
        if history is not None and bool((history == self.pad_id).any()):
            length = history.shape[1]
            keep = shifted_key_mask(history, self.pad_id) & (
                torch.arange(length, device=tokens.device)[None, :] <= positions[:, None])  # (R, kv_len)
        for i, (block, (ck, cv)) in enumerate(zip(self._blocks, cache)):
            q, k, v = block.attn.qkv(block.ln_1(x))  # (R, H, 1, Dh)
            ck[rows, :, positions], cv[rows, :, positions] = k[:, :, 0], v[:, :, 0]
            q = q[:, :, 0]  # (R, H, Dh)
            if keep is not None and i < text_layers:
                ctx = block.attn.backend.prefill(q[:, :, None], ck, cv, ~keep)[:, :, 0]
            else:
                ctx = block.attn.backend.decode_self(q, ck, cv, positions + 1)
            x = block.attend_with(x, ctx[:, :, None])
            if i >= text_layers:
                x = self._cross(x, i - text_layers, sources, step=True)
        return self.model.text_decoder.logits(x[:, 0]).float()
