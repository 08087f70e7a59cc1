"""Decode attention (one new query per row) over a KV cache, split-KV, with
an optional shared key prefix (e.g. image tokens shared by all beams).

Output layout: a contiguous (R, H, D) tensor, so `out.reshape(R, H * D)` is
a free view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _common as c
from .reference import decode_key_mask, gather_decode_rows

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


def _check(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, prefix) -> None:
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
    _check_prefix(q, *prefix)


def _check_prefix(q, prefix_k, prefix_v, prefix_padding_mask, row_to_prefix) -> None:
    if prefix_k is None and prefix_v is None:
        c.require(prefix_padding_mask is None and row_to_prefix is None, _NAME,
                  "prefix_padding_mask / row_to_prefix need prefix_k and prefix_v")
        return
    c.require(prefix_k is not None and prefix_v is not None, _NAME,
              "prefix_k and prefix_v must be given together")
    for label, t in (("prefix_k", prefix_k), ("prefix_v", prefix_v)):
        c.require(isinstance(t, torch.Tensor), _NAME, f"{label} must be a torch.Tensor")
        c.require(t.dtype == q.dtype, _NAME, f"{label} has dtype {t.dtype}; expected q's {q.dtype}")
        c.require(t.device == q.device, _NAME, f"{label} is on {t.device}, q on {q.device}")
    rows, heads, d = q.shape
    c.require(prefix_k.dim() == 4 and prefix_k.shape[1] == heads and prefix_k.shape[3] == d, _NAME,
              f"prefix_k has shape {tuple(prefix_k.shape)}; expected (P, {heads}, Lp, {d})")
    c.require(prefix_v.shape == prefix_k.shape, _NAME,
              f"prefix_v has shape {tuple(prefix_v.shape)}; expected prefix_k's {tuple(prefix_k.shape)}")
    num_p, _, len_p, _ = prefix_k.shape
    c.require(row_to_prefix is not None or num_p == rows, _NAME,
              f"without row_to_prefix, prefix_k/v need one row per query row: P={num_p}, R={rows}")
    c.check_index(_NAME, "row_to_prefix", row_to_prefix, rows, q.device)
    c.check_mask(_NAME, prefix_padding_mask, (num_p, len_p), q.device, label="prefix_padding_mask")


def _torch_fallback(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, prefix, out) -> None:
    rows = q.shape[0]
    valid = decode_key_mask(k.shape[0], k.shape[2], kv_lengths=kv_lengths,
                            key_padding_mask=key_padding_mask, device=q.device)
    k_rows, v_rows, valid = gather_decode_rows(rows, k, v, valid, row_to_kv)  # copies: slow path
    prefix_k, prefix_v, prefix_mask, row_to_prefix = prefix
    if prefix_k is not None:
        p_valid = decode_key_mask(prefix_k.shape[0], prefix_k.shape[2], key_padding_mask=prefix_mask,
                                  device=q.device)
        pk, pv, p_valid = gather_decode_rows(rows, prefix_k, prefix_v, p_valid, row_to_prefix)
        k_rows, v_rows = torch.cat([pk, k_rows], dim=2), torch.cat([pv, v_rows], dim=2)
        valid = torch.cat([p_valid, valid], dim=1)
    res = F.scaled_dot_product_attention(
        q[:, :, None, :], k_rows, v_rows, attn_mask=valid[:, None, None, :], scale=scale,
    )  # (R, H, 1, D)
    res = torch.where(valid.any(-1)[:, None, None, None], res,
                      torch.zeros((), dtype=res.dtype, device=res.device))
    out.copy_(res[:, :, 0, :])


def _launch_split(kernel, q, k, v, out, parts, lens, mask, row_map, qk_scale, blocks,
                  split_offset, total_splits) -> None:
    """One split-kernel launch over one key segment; writes `out` directly
    when it is the only chunk, else its partials from split_offset on."""
    mask = mask.view(torch.uint8) if mask is not None else None
    # The kernel indexes these vectors with unit stride (no-op when contiguous).
    lens = lens.contiguous() if lens is not None else None
    row_map = row_map.contiguous() if row_map is not None else None
    rows, heads = q.shape[:2]
    kernel[(rows, heads, blocks.num_splits)](
        q, k, v, out, *parts,
        lens if lens is not None else q,
        mask if mask is not None else q,
        row_map if row_map is not None else q,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *(mask.stride() if mask is not None else (0, 0)),
        k.shape[0], k.shape[2], qk_scale, split_offset, total_splits,
        HEAD_DIM=q.shape[2], BLOCK_N=blocks.block_n, CHUNK=blocks.chunk,
        DIRECT=total_splits == 1,
        HAS_LENS=lens is not None, HAS_MASK=mask is not None, HAS_ROW2KV=row_map is not None,
        num_warps=blocks.num_warps,
    )


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                     kv_lengths: torch.Tensor | None = None,
                     key_padding_mask: torch.Tensor | None = None,
                     row_to_kv: torch.Tensor | None = None,
                     scale: float | None = None,
                     prefix_k: torch.Tensor | None = None,
                     prefix_v: torch.Tensor | None = None,
                     prefix_padding_mask: torch.Tensor | None = None,
                     row_to_prefix: torch.Tensor | None = None) -> torch.Tensor:
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
    prefix_k, prefix_v: optional (P, H, Lp, D), any strides, q's dtype; keys
      shared by several rows and stored once (BEiT-3: the image tokens all
      beams of an image attend to). Row r attends, in ONE softmax, over the
      valid keys of prefix row row_to_prefix[r] and its own valid keys.
    prefix_padding_mask: bool (P, Lp), True where a prefix key is padding.
    row_to_prefix: int (R,); None means P == R and row r reads prefix row r.
      A row mapped outside [0, P) sees no prefix keys (no out-of-bounds read).
    scale defaults to D ** -0.5. A row with no valid key (in either segment)
    outputs zeros.

    Returns a contiguous (R, H, D) tensor in q's dtype. D in (16, 32, 64, 128)
    runs the Triton kernels; other head dims use a torch fallback (warning
    logged once per head dim). Nothing is synced to the host, so the call
    can be captured in a CUDA graph. Forward only (no autograd). Tensors must
    be on CUDA, or on the CPU under TRITON_INTERPRET=1.
    """
    prefix = (prefix_k, prefix_v, prefix_padding_mask, row_to_prefix)
    _check(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, prefix)
    rows, heads, d = q.shape
    scale = float(d ** -0.5 if scale is None else scale)
    out = _empty_output(rows, heads, d, q.dtype, q.device)

    if d not in c.SUPPORTED_HEAD_DIMS:
        c.warn_fallback_once(_NAME, d)
        if out.numel():
            _torch_fallback(q, k, v, kv_lengths, key_padding_mask, row_to_kv, scale, prefix, out)
        return out
    if not c.triton_available():
        raise RuntimeError(f"{_NAME}: triton is not installed; use the sdpa attention backend")
    split_kernel, combine_kernel, log2e = _kernels()
    c.check_runnable(split_kernel, q.device, _NAME)
    if out.numel() == 0:
        return out

    # Key segments, each (k, v, lengths, mask, row map); their chunks go to
    # one partial buffer, prefix first, and one combine merges them all.
    segments = [(k, v, kv_lengths, key_padding_mask, row_to_kv)]
    if prefix_k is not None:
        segments.insert(0, (prefix_k, prefix_v, None, prefix_padding_mask, row_to_prefix))
    blocks = [decode_blocks(d, q.dtype, q.device, rows, heads, seg[0].shape[2]) for seg in segments]
    total = sum(b.num_splits for b in blocks)
    if total > 1:
        m_part = torch.empty(rows, heads, total, dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty(rows, heads, total, d, dtype=torch.float32, device=q.device)
        parts = (m_part, l_part, acc_part)
    else:
        parts = (out, out, out)  # unused: the split kernel writes `out`
    offset = 0
    for (seg_k, seg_v, lens, mask, row_map), blk in zip(segments, blocks):
        _launch_split(split_kernel, q, seg_k, seg_v, out, parts, lens, mask, row_map,
                      scale * log2e, blk, offset, total)
        offset += blk.num_splits
    if total > 1:
        combine_kernel[(rows * heads,)](
            *parts, out, *out.stride(), heads,
            HEAD_DIM=d, NUM_SPLITS=total, SPLITS_POW2=c.next_pow2(total),
            num_warps=blocks[-1].num_warps,
        )
    return out
