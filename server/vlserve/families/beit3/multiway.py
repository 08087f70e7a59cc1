"""BEiT-3's Multiway transformer layer, with torchscale 0.3's parameter names so unilm's
checkpoints load without a key map.

Every per-token module is a pair of experts: `A` for image tokens, `B` for text tokens. A
sequence is image tokens first, then text, and `split` says how many lead: split = L runs
all of A (vision mode), 0 all of B (text mode), anything between splits the tokens (fusion
mode). Self-attention itself is shared: one softmax over all tokens.

    self_attn.{q,k,v,out}_proj.{A,B}   self_attn.inner_attn_ln.{A,B} (sub-LN)
    self_attn_layer_norm.{A,B}         ffn.{A,B}.{fc1,ffn_layernorm,fc2}   final_layer_norm.{A,B}

Shapes: x (B, L, D); heads (B, H, L, Dh).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models.attention import AttentionBackend, SdpaAttention
from ...models.int8 import Int8Linear, quantize_linears
from .config import Beit3Config


def _apply(a: Callable, b: Callable, x: torch.Tensor, split: int, width: int) -> torch.Tensor:
    """a over the first `split` tokens, b over the rest, into one (B, L, width) tensor."""
    n = x.shape[1]
    if split >= n:
        return a(x)
    if split <= 0:
        return b(x)
    out = x.new_empty(x.shape[0], n, width)
    out[:, :split] = a(x[:, :split])
    out[:, split:] = b(x[:, split:])
    return out


class Multiway(nn.Module):
    def __init__(self, make: Callable[[], nn.Module], width: int):
        super().__init__()
        self.A, self.B = make(), make()
        self.width = width  # of the output

    def forward(self, x: torch.Tensor, split: int) -> torch.Tensor:
        return _apply(self.A, self.B, x, split, self.width)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, subln: bool, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ffn_layernorm = nn.LayerNorm(hidden, eps=eps) if subln else None
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(x).float()).type_as(x)  # torchscale runs the activation in fp32
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        return self.fc2(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: Beit3Config):
        super().__init__()
        d = cfg.width
        self.heads, self.dim = cfg.heads, d
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            setattr(self, name, Multiway(lambda: nn.Linear(d, d), d))
        self.inner_attn_ln = Multiway(lambda: nn.LayerNorm(d, eps=cfg.eps), d) if cfg.subln else None
        self.backend: AttentionBackend = SdpaAttention()
        self._packed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._int8: dict[str, Int8Linear] = {}  # plain dicts: neither is in state_dict (the weights are)

    def pack(self) -> None:
        """Fuse each expert's q/k/v into one matmul; the three weights become views of the
        fused one, so nothing is stored twice and state_dict keeps torchscale's names."""
        for e in ("A", "B"):
            projs = [getattr(getattr(self, p), e) for p in ("q_proj", "k_proj", "v_proj")]
            w = torch.cat([p.weight.detach() for p in projs])
            b = torch.cat([p.bias.detach() for p in projs])
            for i, p in enumerate(projs):
                p.weight = nn.Parameter(w[i * self.dim:(i + 1) * self.dim], requires_grad=False)
                p.bias = nn.Parameter(b[i * self.dim:(i + 1) * self.dim], requires_grad=False)
            self._packed[e] = (w, b)

    def quantize_int8(self) -> None:
        """int8 for the fused q/k/v (or the three projections) and the output projection."""
        if self._packed:
            for e, (w, b) in self._packed.items():
                fused = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
                fused.weight, fused.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)
                self._int8[e] = Int8Linear(fused)
            quantize_linears(self.out_proj)
        else:
            quantize_linears(self)

    def _expert_qkv(self, e: str) -> Callable:
        if e in self._int8:
            return self._int8[e]
        if e in self._packed:
            w, b = self._packed[e]
            return lambda x: F.linear(x, w, b)
        q, k, v = (getattr(getattr(self, p), e) for p in ("q_proj", "k_proj", "v_proj"))
        return lambda x: torch.cat([q(x), k(x), v(x)], dim=-1)

    def qkv(self, x: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        fused = _apply(self._expert_qkv("A"), self._expert_qkv("B"), x, split, 3 * self.dim)
        q, k, v = fused.view(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, L, Dh)

    def kv(self, x: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.qkv(x, split)[1:]

    def merge(self, ctx: torch.Tensor, split: int) -> torch.Tensor:
        """Attention context (B, H, L, Dh) -> the block's attention output (B, L, D)."""
        b, _, n, _ = ctx.shape
        x = ctx.transpose(1, 2).reshape(b, n, self.dim)
        if self.inner_attn_ln is not None:
            x = self.inner_attn_ln(x, split)
        return self.out_proj(x, split)


class Layer(nn.Module):
    """torchscale's pre-LN EncoderLayer with multiway experts (no DeepNorm, no MoE)."""

    def __init__(self, cfg: Beit3Config):
        super().__init__()
        d = cfg.width
        self.self_attn = SelfAttention(cfg)
        self.self_attn_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=cfg.eps), d)
        self.ffn = Multiway(lambda: FeedForward(d, cfg.ffn, cfg.subln, cfg.eps), d)
        self.final_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=cfg.eps), d)

    def attend_with(self, x: torch.Tensor, ctx: torch.Tensor, split: int) -> torch.Tensor:
        """The layer given its attention context (B, H, L, Dh), however that was computed."""
        x = x + self.self_attn.merge(ctx, split)
        return x + self.ffn(self.final_layer_norm(x, split), split)

    def forward(self, x: torch.Tensor, split: int, key_padding_mask=None, first_only: bool = False) -> torch.Tensor:
        """first_only: the first token's output alone (B, 1, D), for heads that read nothing else."""
        q, k, v = self.self_attn.qkv(self.self_attn_layer_norm(x, split), split)
        if first_only:
            q, x, split = q[:, :, :1], x[:, :1], min(split, 1)
        return self.attend_with(x, self.self_attn.backend.prefill(q, k, v, key_padding_mask), split)
