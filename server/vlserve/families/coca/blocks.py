"""The blocks open_clip's CoCa towers are made of, with its parameter names (so a checkpoint
loads without a key map): pre-LN residual blocks `ln_1 attn [ls_1] ln_2 mlp.{c_fc,c_proj}
[ls_2]`, and attention holding nn.MultiheadAttention's `in_proj_weight` / `in_proj_bias` /
`out_proj` (or separate q/k/v weights when keys come from another width). The attention
math itself goes to the shared backends (models/attention.py).

Shapes: x (B, L, D); heads (B, H, L, Dh).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.activations import activation
from ...models.attention import AttentionBackend, SdpaAttention
from ...models.int8 import Int8Linear, quantize_linears
from .config import LN_EPS


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kdim: int | None = None):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.packed = kdim is None or kdim == dim  # nn.MultiheadAttention's _qkv_same_embed_dim
        if self.packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(dim, dim))
            self.k_proj_weight = nn.Parameter(torch.empty(dim, kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(dim, kdim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.backend: AttentionBackend = SdpaAttention()
        self._int8: dict[str, Int8Linear] = {}  # quantize_int8's; not in state_dict (the float weights are)

    def quantize_int8(self) -> None:
        """int8 projections (models/int8.py): the fused q/k/v, each of them alone, and out_proj."""
        w, b, d = self._weights(), self.in_proj_bias, self.dim
        self._int8 = {name: Int8Linear.of(w[i], b[i * d:(i + 1) * d]) for i, name in enumerate("qkv")}
        if self.packed:
            self._int8["qkv"] = Int8Linear.of(self.in_proj_weight, b)
        self.out_proj = Int8Linear(self.out_proj)

    def _weights(self):
        if self.packed:
            return self.in_proj_weight.chunk(3)
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)  # (B, H, L, Dh)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        if self._int8:
            return self._heads(self._int8["q"](x))
        w = self._weights()[0]
        return self._heads(F.linear(x, w, self.in_proj_bias[: self.dim]))

    def kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._int8:
            return self._heads(self._int8["k"](x)), self._heads(self._int8["v"](x))
        _, wk, wv = self._weights()
        b = self.in_proj_bias
        return (self._heads(F.linear(x, wk, b[self.dim: 2 * self.dim])),
                self._heads(F.linear(x, wv, b[2 * self.dim:])))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention's queries, keys and values in one matmul (packed weights)."""
        if not self.packed:
            return (self.q(x), *self.kv(x))
        b, n, _ = x.shape
        fused = self._int8["qkv"](x) if self._int8 else F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = fused.view(b, n, 3, self.heads, self.dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, Dh)
        return q, k, v

    def merge(self, ctx: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = ctx.shape
        return self.out_proj(ctx.transpose(1, 2).reshape(b, n, self.dim))  # (B, L, D)

    def forward(self, x, kv_x=None, key_padding_mask=None, causal=False) -> torch.Tensor:
        if kv_x is None:
            q, k, v = self.qkv(x)
        else:
            q, (k, v) = self.q(x), self.kv(kv_x)
        return self.merge(self.backend.prefill(q, k, v, key_padding_mask, causal))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float, act: str):
        super().__init__()
        self.c_fc = nn.Linear(dim, int(dim * ratio))
        self.gelu = activation(act)
        self.c_proj = nn.Linear(int(dim * ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LN_EPS)


class Block(nn.Module):
    """open_clip's ResidualAttentionBlock; `cross` adds ln_1_kv for keys/values from elsewhere."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: str, ls: bool, cross: bool = False):
        super().__init__()
        self.ln_1 = layer_norm(dim)
        self.attn = Attention(dim, heads)
        self.ls_1 = LayerScale(dim) if ls else nn.Identity()
        if cross:
            self.ln_1_kv = layer_norm(dim)
        self.ln_2 = layer_norm(dim)
        self.mlp = Mlp(dim, mlp_ratio, act)
        self.ls_2 = LayerScale(dim) if ls else nn.Identity()

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def forward(self, x, key_padding_mask=None, causal=False) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), key_padding_mask=key_padding_mask, causal=causal))
        return self.feed_forward(x)

    def attend_with(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """The block given its attention's context (B, H, L, Dh) (from a cache, or cross-attention)."""
        return self.feed_forward(x + self.ls_1(self.attn.merge(ctx)))


def quantize_blocks(blocks) -> None:
    """int8 attention projections and MLPs for these blocks (LayerNorms and LayerScale stay float)."""
    for block in blocks:
        block.attn.quantize_int8()
        quantize_linears(block.mlp)


class Transformer(nn.Module):
    """`transformer.resblocks.{i}` in the checkpoints."""

    def __init__(self, dim: int, layers: int, heads: int, mlp_ratio: float, act: str, ls: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(Block(dim, heads, mlp_ratio, act, ls) for _ in range(layers))

    def forward(self, x, key_padding_mask=None, causal=False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, key_padding_mask, causal)
        return x
