"""BLIP's text transformer (BERT-style, post-LN, no token types), used three ways:
`text` (bidirectional, no cross-attention), `fusion` (bidirectional + cross-attention to
image tokens) and `decoder` (causal + cross-attention, with a KV cache).

Module names follow the checkpoints (`attention.self.query`, `crossattention`,
`intermediate.dense`, `cls.predictions`) so the key map is a few prefix renames.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...models.activations import activation
from ...models.attention import AttentionBackend, SdpaAttention
from .config import TextConfig


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class QKV(nn.Module):
    """`attention.self`: separate query/key/value projections (keys may come from another width)."""

    def __init__(self, cfg: TextConfig, kv_width: int):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.query(x))

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.key(source)), self.heads(self.value(source))


class DenseNorm(nn.Module):
    """`attention.output` / `output`: dense, then LayerNorm over the residual sum."""

    def __init__(self, in_width: int, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig, kv_width: int):
        super().__init__()
        self.self = QKV(cfg, kv_width)
        self.output = DenseNorm(cfg.hidden_size, cfg)
        self.backend: AttentionBackend = SdpaAttention()

    def merge(self, ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        b, _, l, _ = ctx.shape
        return self.output(ctx.transpose(1, 2).reshape(b, l, -1), residual)  # (B, L, Dt)


class Intermediate(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class TextLayer(nn.Module):
    def __init__(self, cfg: TextConfig, cross: bool):
        super().__init__()
        self.attention = Attention(cfg, cfg.hidden_size)
        self.crossattention = Attention(cfg, cfg.encoder_hidden_size) if cross else None
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg.intermediate_size, cfg)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)

    def forward(self, x, pad_mask, causal, enc_states, enc_pad_mask):
        sa = self.attention
        k, v = sa.self.kv(x)
        x = sa.merge(sa.backend.prefill(sa.self.q(x), k, v, pad_mask, causal), x)
        if enc_states is not None:
            ca = self.crossattention
            k, v = ca.self.kv(enc_states)
            x = ca.merge(ca.backend.prefill(ca.self.q(x), k, v, enc_pad_mask), x)
        return self.feed_forward(x)

    def prefill(self, x, pad_mask, cache_k, cache_v, cross, layer):
        """Causal pass over right-padded prompts, writing their keys/values into the cache."""
        sa, ca = self.attention, self.crossattention
        k, v = sa.self.kv(x)
        cache_k[:, :, : x.shape[1]] = k
        cache_v[:, :, : x.shape[1]] = v
        x = sa.merge(sa.backend.prefill(sa.self.q(x), k, v, pad_mask, causal=True), x)
        x = ca.merge(cross.prefill(ca, layer, ca.self.q(x)), x)
        return self.feed_forward(x)

    def step(self, x, rows, positions, cache_k, cache_v, cross, layer):
        """One token per row (x is (R, 1, Dt)); each row attends its own cache up to its position."""
        sa, ca = self.attention, self.crossattention
        k, v = sa.self.kv(x)  # (R, H, 1, Dh)
        cache_k[rows, :, positions] = k[:, :, 0]
        cache_v[rows, :, positions] = v[:, :, 0]
        q = sa.self.q(x)[:, :, 0]  # (R, H, Dh)
        ctx = sa.backend.decode_self(q, cache_k, cache_v, positions + 1)
        x = sa.merge(ctx.unsqueeze(2), x)
        ctx = cross.step(ca, layer, ca.self.q(x)[:, :, 0])
        x = ca.merge(ctx.unsqueeze(2), x)
        return self.feed_forward(x)


class LayerStack(nn.Module):
    """`encoder` in the checkpoints: holds `layer.{i}`."""

    def __init__(self, cfg: TextConfig, cross: bool):
        super().__init__()
        self.layer = nn.ModuleList(TextLayer(cfg, cross) for _ in range(cfg.num_hidden_layers))


class TextTransformer(nn.Module):
    """input_ids (B, L) -> hidden states (B, L, Dt); `cross` adds cross-attention layers."""

    def __init__(self, cfg: TextConfig, cross: bool = True):
        super().__init__()
        self.config = cfg
        self.has_cross = cross
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = LayerStack(cfg, cross)

    @property
    def layers(self):
        return self.encoder.layer

    def forward(self, input_ids, attention_mask=None, *, encoder_states=None, encoder_pad_mask=None,
                causal=False):
        """attention_mask: 1 = token, 0 = padding (the tokenizer's convention)."""
        if encoder_states is not None and not self.has_cross:
            raise ValueError("this text transformer has no cross-attention weights")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        x = self.embeddings(input_ids, positions)
        pad = None if attention_mask is None else attention_mask == 0
        for layer in self.layers:
            x = layer(x, pad, causal, encoder_states, encoder_pad_mask)
        return x

    def cross_kv(self, encoder_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of each layer, computed once per source."""
        return [layer.crossattention.self.kv(encoder_states) for layer in self.layers]

    def prefill(self, input_ids, prompt_lengths, cache, cross):
        """input_ids (n, Lp) right-padded; cache: per-layer (k, v) for these n rows; cross: see cross.py."""
        lp = input_ids.shape[1]
        positions = torch.arange(lp, device=input_ids.device)[None, :]
        pad = positions >= prompt_lengths[:, None]  # (n, Lp)
        x = self.embeddings(input_ids, positions)
        for i, (layer, (ck, cv)) in enumerate(zip(self.layers, cache)):
            x = layer.prefill(x, pad, ck, cv, cross, i)
        return x

    def step(self, tokens, positions, cache, cross):
        """tokens, positions (R,): one new token per row."""
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        x = self.embeddings(tokens[:, None], positions[:, None])  # (R, 1, Dt)
        for i, (layer, (ck, cv)) in enumerate(zip(self.layers, cache)):
            x = layer.step(x, rows, positions, ck, cv, cross, i)
        return x[:, 0]


class PredictionHeadTransform(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class LMPredictions(nn.Module):
    """`cls.predictions`: transform, then the (usually tied) vocabulary projection."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform(x)
        if x.dim() == 2 and x.device.type == "cpu" and isinstance(self.decoder, nn.Linear):  # not int8
            # decode steps: a few rows against the whole vocabulary; CPU BLAS streams the
            # (V, D) matrix faster as W @ xᵀ than as x @ Wᵀ (measured 1.5x for BLIP's 30k vocab)
            return torch.mm(self.decoder.weight, x.T).T + self.decoder.bias
        return self.decoder(x)


class LMHead(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.predictions = LMPredictions(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


class TextDecoder(nn.Module):
    """`text_decoder`: `bert` (causal text transformer with cross-attention) + `cls` (LM head)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.bert = TextTransformer(cfg, cross=True)
        self.cls = LMHead(cfg)

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask, encoder_states, encoder_pad_mask=None):
        """Teacher-forced logits (B, L, V) for every position (training, answer ranking)."""
        hidden = self.bert(input_ids, attention_mask, encoder_states=encoder_states,
                           encoder_pad_mask=encoder_pad_mask, causal=True)
        return self.cls(hidden)
