"""Decode attention (one new query per row) over a KV cache, split-KV.

Output layout: a contiguous (R, H, D) tensor, so `out.reshape(R, H * D)` is
a free view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _common as c
from .reference import decode_key_mask

_NAME = "decode_attention"


@dataclass(frozen=True)
class DecodeBlocks:
    block_n: int     # keys per loop iteration
    chunk: int       # keys per program (a multiple of block_n)
    num_splits: int  # programs per (row, head) = cdiv(Lk, chunk)
    num_warps: int


def decode_blocks(head_dim: int, dtype: torch.dtype, device: torch.device,
                  rows: int, heads: int, len_k: int) -> DecodeBlocks:
    """Tile size and KV split for one call.

    The split depends on the cache capacity Lk, not on the actual lengths, so
    choosing it needs no device->host sync (CUDA-graph friendly); chunks past
    a row's length exit at once. CUDA: 64-key tiles (32 at D=128 to bound
    registers), enough chunks that rows*heads*splits is ~8 programs per SM,
    since a single query row per program is too little work to hide memory
    latency. CPU (interpreter): 16-key tiles and up to 4 chunks, so tests
    cover the combine step.
    """
    if device.type != "cuda":
        block_n, warps = 16, 1
        splits = min(4, c.cdiv(len_k, block_n))
    else:
        block_n = 64 if head_dim <= 64 else 32
        warps = 4
        target = 8 * c.sm_count(device.index if device.index is not None else torch.cuda.current_device())
        splits = min(c.cdiv(len_k, block_n), c.cdiv(target, max(1, rows * heads)), 64)
    splits = max(1, splits)
    chunk = c.cdiv(c.cdiv(max(len_k, 1), splits), block_n) * block_n
    return DecodeBlocks(block_n, chunk, c.cdiv(max(len_k, 1), chunk), warps)


@functools.cache
def _kernels():
    from ._attention_triton import LOG2E
    from ._decode_triton import _decode_combine, _decode_split
    return _decode_split, _decode_combine, LOG2E


def _empty_output(rows, heads, head_dim, dtype, device) -> torch.Tensor:
    """Allocate the (R, H, D) output (tests swap in a NaN-filled one)."""
    return torch.empty(rows, heads, head_dim, dtype=dtype, device=device)


def _check(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale) -> None:
    c.check_qkv_dtypes(_NAME, q, k, v)
    c.require(q.dim() == 3, _NAME, f"q must be 3-D (R, H, D), got shape {tuple(q.shape)}")
    c.require(k.dim() == 4 and v.dim() == 4, _NAME,
              f"k, v must be 4-D (S, H, Lk, D), got {tuple(k.shape)}, {tuple(v.shape)}")
    rows, heads, d = q.shape
    num_kv, _, len_k, _ = k.shape
    c.require(k.shape[1] == heads and k.shape[3] == d, _NAME,
              f"k has shape {tuple(k.shape)}; expected (S, {heads}, Lk, {d}) to match q {tuple(q.shape)}")
    c.require(v.shape == k.shape, _NAME, f"v has shape {tuple(v.shape)}; expected k's {tuple(k.shape)}")
    c.require(row_to_kv is not None or num_kv == rows, _NAME,
              f"without row_to_kv, k/v need one KV row per query row: S={num_kv}, R={rows}")
    c.check_index(_NAME, "row_to_kv", row_to_kv, rows, q.device)
    c.check_index(_NAME, "kv_lengths", kv_lengths, num_kv, q.device)
    c.check_mask(_NAME, key_padding_mask, (num_kv, len_k), q.device)
    c.require(scale is None or isinstance(scale, (int, float)), _NAME, "scale must be a float or None")


def _torch_fallback(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, out) -> None:
    rows, num_kv, len_k = q.shape[0], k.shape[0], k.shape[2]
    if row_to_kv is None:
        row_to_kv = torch.arange(rows, device=q.device)
    in_range = (row_to_kv >= 0) & (row_to_kv < num_kv)
    idx = row_to_kv.long().clamp(0, num_kv - 1)
    valid = decode_key_mask(num_kv, len_k, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask,
                            device=q.device)[idx] & in_range[:, None]  # (R, Lk)
    res = F.scaled_dot_product_attention(
        q[:, :, None, :], k[idx], v[idx], attn_mask=valid[:, None, None, :], scale=scale,
    )  # (R, H, 1, D); k[idx] copies, acceptable on this slow path
    res = torch.where(valid.any(-1)[:, None, None, None], res,
                      torch.zeros((), dtype=res.dtype, device=res.device))
    out.copy_(res[:, :, 0, :])


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                     kv_lengths: torch.Tensor | None = None,
                     key_padding_mask: torch.Tensor | None = None,
                     row_to_kv: torch.Tensor | None = None,
                     scale: float | None = None) -> torch.Tensor:
    """Attention of one query per row over cached keys/values (flash-decoding).

    q: (R, H, D), one query token per row (sequence or beam).
    k, v: (S, H, Lk, D) KV rows with capacity Lk; any strides.
    row_to_kv: int (R,), query row r reads KV row row_to_kv[r], so the beams
      or samples of one image share one copy of its cross-attention K/V. When
      None, S must equal R and row r reads KV row r. A row mapped outside
      [0, S) sees no keys (zeros) instead of reading out of bounds.
    kv_lengths: int (S,), per KV row: keys at positions >= kv_lengths[s] are
      ignored (ragged self-attention caches); values are clamped to [0, Lk].
    key_padding_mask: bool (S, Lk), True where a key is padding; combinable
      with kv_lengths.
    scale defaults to D ** -0.5. A row with no valid key outputs zeros.

    Returns a contiguous (R, H, D) tensor in q's dtype. D in (16, 32, 64, 128)
    runs the Triton kernels; other head dims use a torch fallback (warning
    logged once per head dim). Nothing is synced to the host, so the call
    can be captured in a CUDA graph. Forward only (no autograd). Tensors must
    be on CUDA, or on the CPU under TRITON_INTERPRET=1.
    """
    _check(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale)
    rows, heads, d = q.shape
    num_kv, _, len_k, _ = k.shape
    scale = float(d ** -0.5 if scale is None else scale)
    out = _empty_output(rows, heads, d, q.dtype, q.device)

    if d not in c.SUPPORTED_HEAD_DIMS:
        c.warn_fallback_once(_NAME, d)
        if out.numel():
            _torch_fallback(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, out)
        return out
    if not c.triton_available():
        raise RuntimeError(f"{_NAME}: triton is not installed; use the sdpa attention backend")
    split_kernel, combine_kernel, log2e = _kernels()
    c.check_runnable(split_kernel, q.device, _NAME)
    if out.numel() == 0:
        return out

    blocks = decode_blocks(d, q.dtype, q.device, rows, heads, len_k)
    splits = blocks.num_splits
    if splits > 1:
        m_part = torch.empty(rows, heads, splits, dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty(rows, heads, splits, d, dtype=torch.float32, device=q.device)
    else:
        m_part = l_part = acc_part = out  # unused: the split kernel writes `out`
    mask = key_padding_mask.view(torch.uint8) if key_padding_mask is not None else None
    # The kernel indexes these vectors with unit stride (no-op when contiguous).
    kv_lengths = kv_lengths.contiguous() if kv_lengths is not None else None
    row_to_kv = row_to_kv.contiguous() if row_to_kv is not None else None
    split_kernel[(rows, heads, splits)](
        q, k, v, out, m_part, l_part, acc_part,
        kv_lengths if kv_lengths is not None else q,
        mask if mask is not None else q,
        row_to_kv if row_to_kv is not None else q,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *(mask.stride() if mask is not None else (0, 0)),
        num_kv, len_k, scale * log2e,
        HEAD_DIM=d, BLOCK_N=blocks.block_n, CHUNK=blocks.chunk, NUM_SPLITS=splits,
        HAS_LENS=kv_lengths is not None, HAS_MASK=mask is not None,
        HAS_ROW2KV=row_to_kv is not None,
        num_warps=blocks.num_warps,
    )
    if splits > 1:
        combine_kernel[(rows * heads,)](
            m_part, l_part, acc_part, out, *out.stride(), heads,
            HEAD_DIM=d, NUM_SPLITS=splits, SPLITS_POW2=c.next_pow2(splits),
            num_warps=blocks.num_warps,
        )
    return out
