"""BLIP's text decoder as the shared decode loop drives it (engine/family.py DecoderGraph).

Rows cross-attend their source (image states for captions, question states for answers)
one of two ways (cross.py): `cached` keeps each source's per-layer keys and values, the
usual KV cache and the layout the Triton decode kernels read; `absorbed` keeps the
source states themselves and folds the keys/values projections into the query.
"""

from __future__ import annotations

import torch

from ...engine.family import SourceView
from .cross import MODES, AbsorbedCross, CachedCross
from .text import TextDecoder


class BlipDecoderGraph:
    def __init__(self, decoder: TextDecoder, eos_id: int, cross_mode: str = "cached"):
        if cross_mode not in MODES:
            raise ValueError(f"cross_mode must be one of {MODES}, got {cross_mode!r}")
        cfg = decoder.bert.config
        weight = decoder.bert.embeddings.word_embeddings.weight  # float even when the linears are int8
        self.decoder, self.cross_mode, self.eos_id = decoder, cross_mode, eos_id
        self.layers, self.heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.max_positions = cfg.max_position_embeddings
        self.device, self.dtype = weight.device, weight.dtype
        # cached: per layer keys then values (S, H, Lk, Dh); absorbed: the states (S, Lk, Dw)
        self.source_length_dim = 2 if cross_mode == "cached" else 1

    def source_tensors(self, states: torch.Tensor) -> list[torch.Tensor]:
        states = states.to(self.dtype)
        if self.cross_mode == "absorbed":
            return [states]
        kv = self.decoder.bert.cross_kv(states)
        return [k for k, _ in kv] + [v for _, v in kv]

    def _cross(self, sources: SourceView):
        if self.cross_mode == "absorbed":
            return AbsorbedCross(sources.tensors[0], sources.pad, sources.groups)
        half = len(sources.tensors) // 2
        return CachedCross(list(zip(sources.tensors[:half], sources.tensors[half:])), sources.pad, sources.groups)

    def prefill(self, ids, lengths, cache, sources: SourceView) -> torch.Tensor:
        hidden = self.decoder.bert.prefill(ids, lengths, cache, self._cross(sources))  # (n, Lp, Dt)
        last = hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]  # (n, Dt)
        return self.decoder.cls(last).float()

    def step(self, tokens, positions, cache, sources: SourceView, history=None) -> torch.Tensor:
        return self.decoder.cls(self.decoder.bert.step(tokens, positions, cache, self._cross(sources))).float()
