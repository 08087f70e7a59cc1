"""BEiT-3's captioner as the shared decode loop drives it (engine/family.py DecoderGraph).

unilm's BEiT3ForCaptioning decodes masked-LM style: image tokens attend among themselves,
text tokens attend to the whole image and causally to the text, and the next token is what
the model predicts at a [MASK] placed after the text so far. Each step feeds the token just
chosen and a fresh [MASK]; the token's keys and values join the cache, the mask's are
scratch (the cache's one `lookahead` position) and are overwritten by the next token.

Image tokens never attend to text, so an image's per-layer keys and values are a prefix
computed once (`source_tensors`: the vision mode, A experts) and read by all of the image's
beams and samples (`decode_prefixed`); every text token runs the B experts.
"""

from __future__ import annotations

import torch

from ...engine.family import SourceView
from .model import Beit3Model


class Beit3CaptionGraph:
    source_length_dim = 2  # per layer keys then values (S, H, N, Dh)
    lookahead = 1  # the [MASK] query's scratch position

    def __init__(self, model: Beit3Model, eos_id: int, mask_id: int):
        cfg = model.config
        self.model, self.eos_id, self.mask_id = model, eos_id, mask_id
        self.layers, self.heads, self.head_dim = cfg.layers, cfg.heads, cfg.head_dim
        self.max_positions = cfg.max_text_tokens - self.lookahead
        weight = model.beit3.text_embed.weight  # float even when the linears are int8
        self.device, self.dtype = weight.device, weight.dtype

    def source_tensors(self, states: torch.Tensor) -> list[torch.Tensor]:
        """Image tokens (n, N, D) -> each layer's keys, then each layer's values (n, H, N, Dh)."""
        x, n = states.to(self.dtype), states.shape[1]
        keys, values = [], []
        for i, layer in enumerate(self.model.layers):
            q, k, v = layer.self_attn.qkv(layer.self_attn_layer_norm(x, n), n)
            keys.append(k)
            values.append(v)
            if i + 1 < self.layers:  # the last layer's output is never read
                x = layer.attend_with(x, layer.self_attn.backend.prefill(q, k, v), n)
        return keys + values

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.caption_logits(self.model.beit3.encoder.final_norm(x, 0))

    def prefill(self, ids, lengths, cache, sources: SourceView) -> torch.Tensor:
        """Prompts (n, Lp) with a [MASK] after each; one row per source, so the prefix is
        joined to the text keys directly (causal alignment puts every image key before the text)."""
        n, lp = ids.shape
        rows = torch.arange(n, device=ids.device)
        ext = torch.cat([ids, ids[:, :1]], dim=1)
        ext[rows, lengths] = self.mask_id
        x = self.model.embed_text(ext)  # (n, Lp + 1, D), text positions 0..Lp
        pad = None
        if sources.pad is not None:
            pad = torch.cat([sources.pad, sources.pad.new_zeros(n, lp + 1)], dim=1)
        for i, (layer, (ck, cv)) in enumerate(zip(self.model.layers, cache)):
            q, k, v = layer.self_attn.qkv(layer.self_attn_layer_norm(x, 0), 0)
            ck[:, :, :lp + 1], cv[:, :, :lp + 1] = k, v
            pk, pv = sources.tensors[i], sources.tensors[self.layers + i]
            ctx = layer.self_attn.backend.prefill(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), pad,
                                                  causal=True)
            x = layer.attend_with(x, ctx, 0)
        return self._logits(x[rows, lengths])

    def step(self, tokens, positions, cache, sources: SourceView, history=None) -> torch.Tensor:
        """Each row's token at its position and a [MASK] after it; logits at the mask."""
        r = tokens.shape[0]
        rows = torch.arange(r, device=tokens.device)
        ids = torch.stack([tokens, torch.full_like(tokens, self.mask_id)], dim=1)  # (R, 2)
        pos = torch.stack([positions, positions + 1], dim=1)
        x = self.model.embed_text(ids, positions=pos)
        lengths = pos + 1  # the token sees the text through itself; the mask also sees the token
        for i, (layer, (ck, cv)) in enumerate(zip(self.model.layers, cache)):
            q, k, v = layer.self_attn.qkv(layer.self_attn_layer_norm(x, 0), 0)  # (R, H, 2, Dh)
            for j in range(2):
                ck[rows, :, pos[:, j]], cv[rows, :, pos[:, j]] = k[:, :, j], v[:, :, j]
            pk, pv = sources.tensors[i], sources.tensors[self.layers + i]
            ctx = layer.self_attn.backend.decode_prefixed(q, pk, pv, sources.pad, sources.groups, ck, cv, lengths)
            x = layer.attend_with(x, ctx, 0)
        return self._logits(x[:, 1])
