"""The `vision` graph, open_clip's VisionTransformer as CoCa uses it: patches + class token
-> ln_pre -> blocks -> pooling. With the attentional pooler (coca_ViT-*), n_queries learned
queries attend the tokens, ln_post, then the first pooled token is the contrastive one and
the rest are what the decoder reads ("the original OpenCLIP CoCa setup", not the paper's
two poolers). Without it (coca_base), ln_post over all tokens: the class token is the
contrastive one, the patch tokens the decoder's.

Output: (latent (B, E) unnormalised, tokens (B, N, Dm)).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import Attention, Transformer, layer_norm
from .config import CocaConfig


class AttentionalPooler(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int, queries: int):
        super().__init__()
        self.query = nn.Parameter(torch.empty(queries, dim))
        self.attn = Attention(dim, heads, kdim=context_dim)
        self.ln_q = layer_norm(dim)
        self.ln_k = layer_norm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_k(x)
        q = self.ln_q(self.query).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, D)
        k, v = self.attn.kv(x)
        return self.attn.merge(self.attn.backend.prefill(self.attn.q(q), k, v))  # (B, Q, D)


class VisionTower(nn.Module):
    def __init__(self, config: CocaConfig):
        super().__init__()
        v = config.vision
        self.conv1 = nn.Conv2d(3, v.width, kernel_size=v.patch_size, stride=v.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(v.width))
        self.positional_embedding = nn.Parameter(torch.empty(v.grid ** 2 + 1, v.width))
        self.ln_pre = nn.Identity() if v.no_ln_pre else layer_norm(v.width)
        act = "quick_gelu" if config.quick_gelu else "gelu"
        self.transformer = Transformer(v.width, v.layers, v.heads, v.mlp_ratio, act, v.ls_init_value is not None)
        pool_dim = v.width
        self.attn_pool = None
        if v.attentional_pool:
            self.attn_pool = AttentionalPooler(config.embed_dim, v.width, v.attn_pooler_heads, v.attn_pooler_queries)
            pool_dim = config.embed_dim
        self.ln_post = layer_norm(pool_dim)
        self.proj = nn.Parameter(torch.empty(pool_dim, config.embed_dim))
        self.pool_type = v.pool_type

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(pixels.to(self.conv1.weight.dtype))  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, D)
        cls = self.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype))  # (B, 1 + g*g, D)
        x = self.transformer(x)
        if self.attn_pool is not None:
            x = self.ln_post(self.attn_pool(x))  # (B, Q, E)
        else:
            x = self.ln_post(x)
        if self.pool_type == "avg":
            pooled, tokens = x[:, 1:].mean(dim=1), x[:, 1:]
        elif self.pool_type == "tok":
            pooled, tokens = x[:, 0], x[:, 1:]
        else:
            pooled = tokens = x
        return pooled @ self.proj, tokens
