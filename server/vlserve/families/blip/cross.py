"""Cross-attention of a decode batch over its sources (images or questions), two ways.

`CachedCross` projects every source's states to keys/values once per layer and reads
them at each step: the usual KV cache, and the layout the Triton decode kernels read.

`AbsorbedCross` never materialises keys/values. Per head h, with states x:
    q·(W_k x + b_k) = (W_kᵀ q)·x + q·b_k     (q·b_k is constant over keys: softmax drops it)
    Σ_j p_j (W_v x_j + b_v) = W_v (Σ_j p_j x_j) + b_v
so each step multiplies the query into the states' width and reads the states (shared
by all layers) instead of per-layer keys/values. It is cheaper when
steps · rows-per-source · heads < hidden width (BLIP-base: 20 greedy steps · 12 heads
< 768), which is the case for captions and short answers on a CPU.

Both take q (N, H, M, Dh) where source s owns query rows N == S (prefill, M = prompt
length) or rows grouped by `groups` (decode steps, M = 1).
"""

from __future__ import annotations

import torch

from ...models.attention import group_rows

MODES = ("cached", "absorbed")


class CachedCross:
    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]], pad: torch.Tensor | None, groups=None):
        self.kv, self.pad, self.groups = kv, pad, groups  # kv: per layer (S, H, Lk, Dh)

    def prefill(self, attn, layer: int, q: torch.Tensor) -> torch.Tensor:
        k, v = self.kv[layer]
        return attn.backend.prefill(q, k, v, self.pad)

    def step(self, attn, layer: int, q: torch.Tensor) -> torch.Tensor:
        k, v = self.kv[layer]
        return attn.backend.decode_cross(q, k, v, self.pad, *(self.groups or (None, None, 1)))


class AbsorbedCross:
    def __init__(self, states: torch.Tensor, pad: torch.Tensor | None, groups=None):
        self.x, self.pad, self.groups = states, pad, groups  # x: (S, Lk, Dw)

    def prefill(self, attn, layer: int, q: torch.Tensor) -> torch.Tensor:
        return self._attend(attn, q)

    def step(self, attn, layer: int, q: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            return self._attend(attn, q[:, :, None])[:, :, 0]
        row_src, row_slot, _ = self.groups
        out = self._attend(attn, group_rows(q, self.x.shape[0], *self.groups))
        return out[row_src, :, row_slot]  # (R, H, Dh)

    def _attend(self, attn, q: torch.Tensor) -> torch.Tensor:
        s, h, m, dh = q.shape
        qkv = attn.self
        wk = qkv.key.weight.view(h, dh, -1)  # (H, Dh, Dw)
        wv = qkv.value.weight.view(h, dh, -1)
        qw = torch.matmul(q.transpose(0, 1).reshape(h, s * m, dh), wk)  # (H, S*M, Dw)
        qw = qw.view(h, s, m, -1).transpose(0, 1).reshape(s, h * m, -1) * dh ** -0.5  # (S, H*M, Dw)
        scores = torch.bmm(qw, self.x.transpose(1, 2))  # (S, H*M, Lk)
        if self.pad is not None:
            scores = scores.masked_fill(self.pad[:, None, :], float("-inf"))
        mixed = torch.bmm(scores.softmax(dim=-1), self.x)  # (S, H*M, Dw): attention-weighted states
        mixed = mixed.view(s, h, m, -1).transpose(0, 1).reshape(h, s * m, -1)  # (H, S*M, Dw)
        ctx = torch.matmul(mixed, wv.transpose(1, 2))  # (H, S*M, Dh)
        ctx = ctx.view(h, s, m, dh).transpose(0, 1) + qkv.value.bias.view(1, h, 1, dh)
        return ctx  # (S, H, M, Dh)
