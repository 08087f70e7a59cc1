"""Attention math behind one switch: `eager` (explicit matmul/softmax, the reference),
`sdpa` (torch.nn.functional.scaled_dot_product_attention) and `triton` (our kernels).

Every model module calls a backend instead of doing attention itself, so the choice
is made once per model and the three stay interchangeable in tests.

Shapes: q (B, H, Lq, D), k/v (B, H, Lk, D); key_padding_mask (B, Lk) bool, True = padding.
Decode: one query per row, q (R, H, D).
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
