"""Attention math behind one switch: `eager` (explicit matmul/softmax, the reference),
`sdpa` (torch.nn.functional.scaled_dot_product_attention) and `triton` (our kernels).

Every model module calls a backend instead of doing attention itself, so the choice
is made once per model and the three stay interchangeable in tests.

Shapes: q (B, H, Lq, D), k/v (B, H, Lk, D); key_padding_mask (B, Lk) bool, True = padding.
Decode: one query per row, q (R, H, D); `decode_prefixed`: a few queries per row, q (R, H, Q, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BACKENDS = ("eager", "sdpa", "triton")


class AttentionBackend:
    name = "base"

    def prefill(self, q, k, v, key_padding_mask=None, causal=False):
        raise NotImplementedError

    def decode_self(self, q, k_cache, v_cache, lengths):
        """q (R, H, D) over each row's own cache k/v (R, H, L, D), keys [0, lengths[r]) valid."""
        valid = torch.arange(k_cache.shape[2], device=q.device)[None, :] < lengths[:, None]
        out = self.prefill(q.unsqueeze(2), k_cache, v_cache, key_padding_mask=~valid)
        return out.squeeze(2)

    def decode_cross(self, q, k, v, key_padding_mask, row_src, row_slot, slots):
        """q (R, H, D) over shared source keys k/v (S, H, Lk, D); row r reads source row_src[r].

        The rows of one source become extra queries of that source (slot row_slot[r] of
        `slots`), so beams and samples of one image read one copy of its keys.
        """
        if row_src is None:
            return self.prefill(q.unsqueeze(2), k, v, key_padding_mask).squeeze(2)
        grouped = group_rows(q, k.shape[0], row_src, row_slot, slots)
        out = self.prefill(grouped, k, v, key_padding_mask)  # (S, H, slots, D)
        return out[row_src, :, row_slot]  # (R, H, D)

    def decode_prefixed(self, q, prefix_k, prefix_v, prefix_pad, groups, k_cache, v_cache, lengths):
        """Q queries per row over its source's prefix keys and its own cache, one softmax over both
        (BEiT-3's captions: the image's keys, stored once per image, then the text so far).

        q (R, H, Q, D); prefix_k/v (S, H, Lp, D), prefix_pad (S, Lp) True = padding, or None;
        groups (row_src, row_slot, slots) as decode_cross takes them, None when row r reads source r;
        k_cache/v_cache (R, H, L, D); lengths (R, Q): query j of row r sees own keys [0, lengths[r, j]).
        """
        nq, d = q.shape[2], q.shape[3]
        scale = d ** -0.5
        own = torch.matmul(q, k_cache.transpose(-1, -2)) * scale  # (R, H, Q, L)
        keys = torch.arange(k_cache.shape[2], device=q.device)
        own = own.masked_fill((keys[None, None, :] >= lengths[:, :, None])[:, None], float("-inf"))
        if groups is None:
            pre = torch.matmul(q, prefix_k.transpose(-1, -2)) * scale  # (R, H, Q, Lp)
            pad = prefix_pad
        else:
            pre = _ungroup(torch.matmul(_group(q, prefix_k.shape[0], groups), prefix_k.transpose(-1, -2)) * scale,
                           groups, nq)
            pad = prefix_pad[groups[0]] if prefix_pad is not None else None
        if pad is not None:
            pre = pre.masked_fill(pad[:, None, None, :], float("-inf"))
        probs = torch.cat([pre, own], dim=-1).float().softmax(dim=-1).to(q.dtype)
        p_pre, p_own = probs.split([pre.shape[-1], own.shape[-1]], dim=-1)
        out = torch.matmul(p_own, v_cache)
        if groups is None:
            return out + torch.matmul(p_pre, prefix_v)
        return out + _ungroup(torch.matmul(_group(p_pre, prefix_v.shape[0], groups), prefix_v), groups, nq)


def _group(x, sources, groups):
    """(R, H, Q, X) per row -> (S, H, slots * Q, X): each source's rows as extra queries."""
    row_src, row_slot, slots = groups
    _, h, nq, w = x.shape
    out = x.new_zeros(sources, slots, h, nq, w)
    out[row_src, row_slot] = x
    return out.transpose(1, 2).reshape(sources, h, slots * nq, w)


def _ungroup(x, groups, nq):
    """(S, H, slots * Q, X) -> (R, H, Q, X), the rows' own queries back."""
    row_src, row_slot, slots = groups
    s, h, _, w = x.shape
    return x.view(s, h, slots, nq, w)[row_src, :, row_slot]


def group_rows(q, sources, row_src, row_slot, slots):
    """q (R, H, D), one query per row -> (S, H, slots, D): the rows of each source side by side."""
    grouped = q.new_zeros(sources, q.shape[1], slots, q.shape[2])
    grouped[row_src, :, row_slot] = q
    return grouped


def _bool_mask(q, k, key_padding_mask, causal):
    """A (B|1, 1, Lq, Lk) bool mask, True = may attend; None when nothing is masked."""
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask[:, None, None, :]
    if causal:
        lq, lk = q.shape[2], k.shape[2]
        rows = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        tri = torch.arange(lk, device=q.device)[None, :] <= rows  # last query sees the last key
        mask = tri[None, None] if mask is None else mask & tri
    return mask


class EagerAttention(AttentionBackend):
    """The reference math: additive finfo.min mask, softmax, as transformers' BLIP does."""

    name = "eager"

    def prefill(self, q, k, v, key_padding_mask=None, causal=False):
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
        mask = _bool_mask(q, k, key_padding_mask, causal)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.matmul(scores.softmax(dim=-1), v)


class SdpaAttention(AttentionBackend):
    name = "sdpa"

    def prefill(self, q, k, v, key_padding_mask=None, causal=False):
        if q.device.type == "cpu" and q.shape[2] <= 4 and not causal:
            # a few queries (decode steps): plain matmuls beat the CPU flash kernel's setup cost
            return _small_query_attention(q, k, v, key_padding_mask)
        if key_padding_mask is None and (not causal or q.shape[2] == k.shape[2]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal and q.shape[2] > 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_bool_mask(q, k, key_padding_mask, causal))


def _small_query_attention(q, k, v, key_padding_mask):
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, Lq, Lk)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


class TritonAttention(AttentionBackend):
    """Fused kernels from vlserve_kernels (imported when this backend is chosen)."""

    name = "triton"

    def __init__(self):
        import vlserve_kernels

        if not vlserve_kernels.triton_available():
            raise RuntimeError("attention backend 'triton' needs the triton package")
        self._k = vlserve_kernels

    def prefill(self, q, k, v, key_padding_mask=None, causal=False):
        return self._k.attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal)

    def decode_self(self, q, k_cache, v_cache, lengths):
        return self._k.decode_attention(q, k_cache, v_cache, kv_lengths=lengths)

    def decode_cross(self, q, k, v, key_padding_mask, row_src, row_slot, slots):
        return self._k.decode_attention(q, k, v, key_padding_mask=key_padding_mask, row_to_kv=row_src)

    def decode_prefixed(self, q, prefix_k, prefix_v, prefix_pad, groups, k_cache, v_cache, lengths):
        row_src = groups[0] if groups is not None else None
        return torch.stack([self._k.decode_attention(
            q[:, :, j], k_cache, v_cache, kv_lengths=lengths[:, j], prefix_k=prefix_k, prefix_v=prefix_v,
            prefix_padding_mask=prefix_pad, row_to_prefix=row_src) for j in range(q.shape[2])], dim=2)


def make_backend(name: str, device: torch.device | str = "cpu") -> AttentionBackend:
    """`auto` picks triton on CUDA (when installed) and sdpa elsewhere."""
    if name == "auto":
        name = "sdpa"
        if torch.device(device).type == "cuda":
            try:
                import vlserve_kernels

                if vlserve_kernels.triton_available():
                    name = "triton"
            except ImportError:
                pass
    if name == "eager":
        return EagerAttention()
    if name == "sdpa":
        return SdpaAttention()
    if name == "triton":
        return TritonAttention()
    raise ValueError(f"unknown attention backend {name!r}; choose one of {('auto',) + BACKENDS}")
