"""Pure-torch reference versions of the kernels.

They compute in float64 with explicit masks and an explicit softmax, return
the input dtype, and define the semantics the Triton kernels must match
(tests compare against them; pass float64 inputs to get float64 results).
"""

from __future__ import annotations

import torch


def _masked_softmax_av(scores: torch.Tensor, allowed: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(scores over allowed keys) @ v; rows with no allowed key give zeros."""
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # A fully masked row is all -inf -> NaN after softmax; define it as zeros.
    probs = torch.where(allowed.any(dim=-1, keepdim=True), probs, torch.zeros_like(probs))
    return probs @ v


def attention_mask(batch: int, lq: int, lk: int, *, key_padding_mask=None, causal=False,
                   device=None) -> torch.Tensor:
    """Bool (B, 1, Lq, Lk) mask, True where query i may attend to key j.

    causal aligns the last query with the last key: j <= i + Lk - Lq.
    """
    allowed = torch.ones(batch, 1, lq, lk, dtype=torch.bool, device=device)
    if causal:
        i = torch.arange(lq, device=device)[:, None]
        j = torch.arange(lk, device=device)[None, :]
        allowed = allowed & (j <= i + (lk - lq))  # (Lq, Lk) broadcast
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
    return allowed


def attention_reference(q, k, v, *, key_padding_mask=None, causal=False, scale=None):
    """Reference for `vlserve_kernels.attention`.

    q (B, H, Lq, D), k and v (B, H, Lk, D); key_padding_mask bool (B, Lk), True
    = padding; returns (B, H, Lq, D) contiguous in q's dtype.
    """
    batch, _, lq, d = q.shape
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    q64, k64, v64 = q.double(), k.double(), v.double()
    scores = (q64 @ k64.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    allowed = attention_mask(batch, lq, lk, key_padding_mask=key_padding_mask, causal=causal,
                             device=q.device)
    return _masked_softmax_av(scores, allowed, v64).to(q.dtype)


def decode_key_mask(num_kv: int, lk: int, *, kv_lengths=None, key_padding_mask=None,
                    device=None) -> torch.Tensor:
    """Bool (S, Lk) mask over the KV rows, True where a key is valid."""
    valid = torch.ones(num_kv, lk, dtype=torch.bool, device=device)
    if kv_lengths is not None:
        valid = valid & (torch.arange(lk, device=device)[None, :] < kv_lengths.to(device)[:, None])
    if key_padding_mask is not None:
        valid = valid & ~key_padding_mask
    return valid


def decode_attention_reference(q, k, v, *, kv_lengths=None, key_padding_mask=None,
                               row_to_kv=None, scale=None):
    """Reference for `vlserve_kernels.decode_attention`.

    q (R, H, D); k, v (S, H, Lk, D); query row r reads KV row row_to_kv[r]
    (r itself when None, then S == R); kv_lengths (S,) and key_padding_mask
    (S, Lk) are per KV row. Rows mapped outside [0, S) see no keys. Returns
    (R, H, D) in q's dtype; a row with no valid key gives zeros.
    """
    rows, _, d = q.shape
    num_kv, _, lk, _ = k.shape
    scale = d ** -0.5 if scale is None else scale
    if row_to_kv is None:
        row_to_kv = torch.arange(rows, device=q.device)
    row_to_kv = row_to_kv.long()
    in_range = (row_to_kv >= 0) & (row_to_kv < num_kv)
    kv_idx = row_to_kv.clamp(0, max(num_kv - 1, 0))
    valid = decode_key_mask(num_kv, lk, kv_lengths=kv_lengths, key_padding_mask=key_padding_mask,
                            device=q.device)
    valid = valid[kv_idx] & in_range[:, None]  # (R, Lk)
    k64, v64 = k.double()[kv_idx], v.double()[kv_idx]  # (R, H, Lk, D)
    scores = (k64 @ q.double()[..., None]).squeeze(-1) * scale  # (R, H, Lk)
    out = _masked_softmax_av(scores[:, :, None, :], valid[:, None, None, :], v64)  # (R, H, 1, D)
    return out.squeeze(2).to(q.dtype)
