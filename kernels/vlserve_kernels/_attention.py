"""Fused attention forward: public wrapper around the Triton kernel.

Output layout: the result is written into a (B, Lq, H, D) contiguous buffer
and returned as its (B, H, Lq, D) view, so a caller's
`out.transpose(1, 2).reshape(B, Lq, H * D)` is a free view, not a copy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _common as c
from .reference import attention_mask

_NAME = "attention"
_MAX_GRID_Y = 65535


@dataclass(frozen=True)
class AttentionBlocks:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def attention_blocks(head_dim: int, dtype: torch.dtype, device: torch.device,
                     len_q: int | None = None, len_k: int | None = None) -> AttentionBlocks:
    """Tile sizes and launch options for one call.

    CPU (interpreter): a quarter of the length rounded to a power of two,
    clamped to [16, 64], so test lengths still cross several tile boundaries
    while long ViT lengths do not take thousands of interpreted iterations.
    CUDA: 128x64 tiles for 16-bit inputs (64x32 for fp32, whose tiles take
    twice the shared memory); 8 warps for D=128; two pipeline stages at D=128
    so the K/V buffers fit GPUs with ~100 KB of shared memory. A short query
    length shrinks BLOCK_M (min 16, tl.dot's minimum).
    """
    if device.type != "cuda":
        def quarter(n):
            return 16 if n is None else max(16, min(64, c.next_pow2(n) // 4))
        return AttentionBlocks(quarter(len_q), quarter(len_k), 1, 1)
    if dtype == torch.float32:
        block_m, block_n, stages = 64, 32, 2
    else:
        block_m, block_n, stages = 128, 64, (3 if head_dim <= 64 else 2)
    if len_q is not None:
        block_m = max(16, min(block_m, c.next_pow2(len_q)))
    warps = 8 if head_dim == 128 and block_m >= 128 else 4
    return AttentionBlocks(block_m, block_n, warps, stages)


@functools.cache
def _kernel():
    from ._attention_triton import LOG2E, _attention_fwd
    return _attention_fwd, LOG2E


def _empty_output(batch, len_q, heads, head_dim, dtype, device) -> torch.Tensor:
    """Allocate the (B, Lq, H, D) output buffer (tests swap in a NaN-filled one)."""
    return torch.empty(batch, len_q, heads, head_dim, dtype=dtype, device=device)


def _check(q, k, v, key_padding_mask, scale) -> None:
    c.check_qkv_dtypes(_NAME, q, k, v)
    c.require(q.dim() == 4 and k.dim() == 4 and v.dim() == 4, _NAME,
              f"q, k, v must be 4-D (B, H, L, D), got {q.dim()}-D, {k.dim()}-D, {v.dim()}-D")
    b, h, _, d = q.shape
    c.require(k.shape[:2] == (b, h) and k.shape[3] == d, _NAME,
              f"k has shape {tuple(k.shape)}; expected ({b}, {h}, Lk, {d}) to match q {tuple(q.shape)}")
    c.require(v.shape == k.shape, _NAME, f"v has shape {tuple(v.shape)}; expected k's {tuple(k.shape)}")
    c.check_mask(_NAME, key_padding_mask, (b, k.shape[2]), q.device)
    c.require(scale is None or isinstance(scale, (int, float)), _NAME, "scale must be a float or None")


def _sdpa_fallback(q, k, v, key_padding_mask, causal, scale, out) -> None:
    b, h, lq, _ = q.shape
    allowed = attention_mask(b, lq, k.shape[2], key_padding_mask=key_padding_mask, causal=causal,
                             device=q.device)  # (B, 1, Lq, Lk)
    res = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
    # SDPA gives NaN (or garbage) for a row with no allowed key; define zeros.
    res = torch.where(allowed.any(-1, keepdim=True), res, torch.zeros((), dtype=res.dtype,
                                                                         device=res.device))
    out.copy_(res)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
              key_padding_mask: torch.Tensor | None = None, causal: bool = False,
              scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v, fused (one pass over K/V, fp32 accumulation).

    q: (B, H, Lq, D); k, v: (B, H, Lk, D); any strides (e.g. views of a packed
    qkv projection), fp16, bf16 or fp32, all one dtype and device.
    key_padding_mask: bool (B, Lk), True where a key is padding (ignored).
    causal: query i sees keys j <= i + Lk - Lq (last query aligned with the
    last key); combinable with key_padding_mask. A query row with no visible
    key outputs zeros. scale defaults to D ** -0.5.

    Returns (B, H, Lq, D) in q's dtype: a view of a (B, Lq, H, D) contiguous
    buffer (see module docstring). D in (16, 32, 64, 128) runs the Triton
    kernel; other head dims use torch SDPA (warning logged once per head dim).
    Forward only (no autograd). Tensors must be on CUDA, or on the CPU under
    TRITON_INTERPRET=1.
    """
    _check(q, k, v, key_padding_mask, scale)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = float(d ** -0.5 if scale is None else scale)
    out = _empty_output(b, lq, h, d, q.dtype, q.device)
    out_bhld = out.permute(0, 2, 1, 3)  # (B, H, Lq, D) view of (B, Lq, H, D)

    if d not in c.SUPPORTED_HEAD_DIMS:
        c.warn_fallback_once(_NAME, d)
        _sdpa_fallback(q, k, v, key_padding_mask, causal, scale, out_bhld)
        return out_bhld
    if not c.triton_available():
        raise RuntimeError(f"{_NAME}: triton is not installed; use the sdpa attention backend")
    kernel, log2e = _kernel()
    c.check_runnable(kernel, q.device, _NAME)
    c.require(not (c.is_interpreted(kernel) and q.dtype == torch.bfloat16), _NAME,
              "the Triton interpreter multiplies bfloat16 tl.dot operands as raw bits "
              "(wrong results); run bf16 attention on CUDA")
    if out.numel() == 0:
        return out_bhld

    blocks = attention_blocks(d, q.dtype, q.device, lq, lk)
    # A bool tensor reinterpreted as uint8 (same bytes, no copy) loads portably.
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask is not None else None
    # Grid axis 1 holds B*H and is capped at 65535 on CUDA: launch batch
    # slices (views, no copies) when a huge batch would exceed it.
    per_launch = max(1, _MAX_GRID_Y // h)
    for b0 in range(0, b, per_launch):
        sl = slice(b0, min(b, b0 + per_launch))
        m = mask[sl] if mask is not None else None
        kernel[(c.cdiv(lq, blocks.block_m), (sl.stop - sl.start) * h)](
            q[sl], k[sl], v[sl], out_bhld[sl], m if m is not None else q,
            *q.stride(), *k.stride(), *v.stride(), *out_bhld.stride(),
            *(m.stride() if m is not None else (0, 0)),
            h, lq, lk, scale * log2e,
            HEAD_DIM=d, BLOCK_M=blocks.block_m, BLOCK_N=blocks.block_n,
            IS_CAUSAL=bool(causal), HAS_MASK=m is not None,
            IEEE_FP32=q.dtype == torch.float32,
            num_warps=blocks.num_warps, num_stages=blocks.num_stages,
        )
    return out_bhld
