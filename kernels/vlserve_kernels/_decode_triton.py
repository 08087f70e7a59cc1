"""Triton kernels for split-KV decode attention (flash-decoding).

`_decode_split` computes, for one (query row, head, KV chunk), the chunk's
softmax max, sum and unnormalised weighted V; `_decode_combine` merges the
chunks. With one chunk the split kernel writes the final output directly
(DIRECT). Several key segments (a shared prefix and the row's own cache) are
one launch each into one partial buffer, at a split offset, and one combine
merges them, so they share one softmax.
Imported lazily by `_decode.py`, only when a kernel is launched.
"""

import triton
import triton.language as tl


@triton.jit
def _decode_split(
    Q, K, V, O, M_PART, L_PART, ACC_PART, LENS, MASK, ROW2KV,
    stride_qr, stride_qh, stride_qd,
    stride_ks, stride_kh, stride_kn, stride_kd,
    stride_vs, stride_vh, stride_vn, stride_vd,
    stride_or, stride_oh, stride_od,
    stride_ms, stride_mn,
    num_kv, len_k, qk_scale, split_offset, total_splits,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
    DIRECT: tl.constexpr,
    HAS_LENS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_ROW2KV: tl.constexpr,
):
    row = tl.program_id(0)
    head = tl.program_id(1)
    split = tl.program_id(2)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    # KV row of this query row; an index outside [0, S) sees no keys rather
    # than reading out of bounds (checking it on the host would need a sync).
    if HAS_ROW2KV:
        kv = tl.load(ROW2KV + row).to(tl.int64)
    else:
        kv = row.to(tl.int64)
    kv_ok = (kv >= 0) & (kv < num_kv)
    kv = tl.where(kv_ok, kv, 0)
    end = len_k
    if HAS_LENS:
        end = tl.minimum(tl.load(LENS + kv).to(tl.int32), len_k)
    end = tl.where(kv_ok, end, 0)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, end)

    q = tl.load(Q + row.to(tl.int64) * stride_qr + head * stride_qh + offs_d * stride_qd)
    q = q.to(tl.float32) * qk_scale  # (HEAD_DIM,), pre-scaled into the exp2 domain
    k_base = K + kv * stride_ks + head * stride_kh
    v_base = V + kv * stride_vs + head * stride_vh

    # Finite start so an all-masked tile gives exp2(-inf - m) = 0, not NaN.
    m_i = -1.0e30
    l_i = 0.0
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        keep = cols < hi
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=keep[:, None], other=0.0)  # (BLOCK_N, HEAD_DIM)
        # One query: a dot product per key on CUDA cores (tl.dot needs M >= 16).
        s = tl.sum(k.to(tl.float32) * q[None, :], 1)  # (BLOCK_N,)
        if HAS_MASK:
            pad = tl.load(MASK + kv * stride_ms + cols * stride_mn, mask=keep, other=1)
            keep = keep & (pad == 0)
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.exp2(s - m_new)
        alpha = tl.exp2(m_i - m_new)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=keep[:, None], other=0.0)  # (BLOCK_N, HEAD_DIM)
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
        l_i = l_i * alpha + tl.sum(p, 0)
        m_i = m_new

    if DIRECT:
        out = acc / tl.where(l_i > 0.0, l_i, 1.0)
        o_ptrs = O + row.to(tl.int64) * stride_or + head * stride_oh + offs_d * stride_od
        tl.store(o_ptrs, out.to(O.dtype.element_ty))
    else:
        # Partials are contiguous (R, H, total_splits[, HEAD_DIM]) fp32; this
        # segment's chunks start at split_offset.
        part = (row.to(tl.int64) * tl.num_programs(1) + head) * total_splits + split_offset + split
        tl.store(M_PART + part, m_i)
        tl.store(L_PART + part, l_i)
        tl.store(ACC_PART + part * HEAD_DIM + offs_d, acc)


@triton.jit
def _decode_combine(
    M_PART, L_PART, ACC_PART, O,
    stride_or, stride_oh, stride_od,
    num_heads,
    HEAD_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_POW2: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)  # row * H + head
    row = pid // num_heads
    head = pid % num_heads
    offs_s = tl.arange(0, SPLITS_POW2)
    offs_d = tl.arange(0, HEAD_DIM)
    s_ok = offs_s < NUM_SPLITS
    part = pid * NUM_SPLITS + offs_s
    m = tl.load(M_PART + part, mask=s_ok, other=-1.0e30)
    l = tl.load(L_PART + part, mask=s_ok, other=0.0)
    acc = tl.load(ACC_PART + part[:, None] * HEAD_DIM + offs_d[None, :],
                  mask=s_ok[:, None], other=0.0)  # (SPLITS_POW2, HEAD_DIM)
    w = tl.exp2(m - tl.max(m, 0))
    total = tl.sum(l * w, 0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    tl.store(O + row * stride_or + head * stride_oh + offs_d * stride_od,
             out.to(O.dtype.element_ty))
