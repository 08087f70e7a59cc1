"""Triton kernel for fused attention forward (FlashAttention-2 style).

Imported lazily by `attention.py`, only when a kernel is launched.
"""

import triton
import triton.language as tl

# exp(x) == exp2(x * log2(e)); folding log2(e) into the scale saves a multiply.
LOG2E = 1.4426950408889634


@triton.jit
def _attention_fwd(
    Q, K, V, O, MASK,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mn,
    num_heads, len_q, len_k, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, IEEE_FP32: tl.constexpr,
):
    """One program: BLOCK_M queries of one (batch, head) against all its keys."""
    start_m = tl.program_id(0) * BLOCK_M
    pid_bh = tl.program_id(1)
    # int64 so batch/head offsets cannot overflow on large packed tensors.
    off_b = (pid_bh // num_heads).to(tl.int64)
    off_h = (pid_bh % num_heads).to(tl.int64)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_valid = offs_m < len_q

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh \
        + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_valid[:, None], other=0.0)  # (BLOCK_M, HEAD_DIM)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh

    # Running max is finite so that a tile of only masked keys (all -inf)
    # gives exp2(-inf - m) = 0 instead of NaN; l_i stays 0 for such rows.
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    hi = len_k
    if IS_CAUSAL:
        # Query i sees keys j <= i + (Lk - Lq): later key tiles are skipped.
        hi = tl.minimum(start_m + BLOCK_M + (len_k - len_q), len_k)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        n_valid = cols < len_k
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=n_valid[:, None], other=0.0)  # (BLOCK_N, HEAD_DIM)
        if IEEE_FP32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N) fp32
        s = s * qk_scale
        keep = n_valid[None, :]
        if HAS_MASK:
            pad = tl.load(MASK + off_b * stride_mb + cols * stride_mn, mask=n_valid, other=1)
            keep = keep & (pad == 0)[None, :]
        if IS_CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None] + (len_k - len_q))
        s = tl.where(keep, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=n_valid[:, None], other=0.0)  # (BLOCK_N, HEAD_DIM)
        acc = acc * alpha[:, None]
        if IEEE_FP32:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    # Rows that saw no valid key have l_i == 0 and acc == 0: output zeros.
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptrs = O + off_b * stride_ob + off_h * stride_oh \
        + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_valid[:, None])
