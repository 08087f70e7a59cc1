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


def gather_decode_rows(rows: int, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                       row_map: torch.Tensor | None):
    """K, V (R, H, L, D) and valid mask (R, L) per query row: row r takes KV
    row row_map[r] (r when None); rows mapped outside [0, S) get no valid key."""
    num = k.shape[0]
    if row_map is None:
        row_map = torch.arange(rows, device=k.device)
    row_map = row_map.long()
    in_range = (row_map >= 0) & (row_map < num)
    if num == 0:  # nothing to gather from: one dummy row, never valid
        k, v = k.new_zeros((1, *k.shape[1:])), v.new_zeros((1, *v.shape[1:]))
        valid = valid.new_zeros((1, valid.shape[1]))
    idx = row_map.clamp(0, max(num - 1, 0))
    return k[idx], v[idx], valid[idx] & in_range[:, None]


def decode_attention_reference(q, k, v, *, kv_lengths=None, key_padding_mask=None,
                               row_to_kv=None, scale=None, prefix_k=None, prefix_v=None,
                               prefix_padding_mask=None, row_to_prefix=None):
    """Reference for `vlserve_kernels.decode_attention`.

    q (R, H, D); k, v (S, H, Lk, D); query row r reads KV row row_to_kv[r]
    (r itself when None, then S == R); kv_lengths (S,) and key_padding_mask
    (S, Lk) are per KV row. Rows mapped outside [0, S) see no keys.
    Optional shared prefix: prefix_k, prefix_v (P, H, Lp, D), row r also sees
    the keys of prefix row row_to_prefix[r] (r when None) not padded in
    prefix_padding_mask (P, Lp), in one softmax with its own keys; rows
    mapped outside [0, P) see no prefix keys. Returns (R, H, D) in q's dtype;
    a row with no valid key gives zeros.
    """
    rows, _, d = q.shape
    scale = d ** -0.5 if scale is None else scale
    valid = decode_key_mask(k.shape[0], k.shape[2], kv_lengths=kv_lengths,
                            key_padding_mask=key_padding_mask, device=q.device)
    k64, v64, valid = gather_decode_rows(rows, k.double(), v.double(), valid, row_to_kv)
    if prefix_k is not None:
        p_valid = decode_key_mask(prefix_k.shape[0], prefix_k.shape[2],
                                  key_padding_mask=prefix_padding_mask, device=q.device)
        pk, pv, p_valid = gather_decode_rows(rows, prefix_k.double(), prefix_v.double(), p_valid,
                                             row_to_prefix)
        k64, v64 = torch.cat([pk, k64], dim=2), torch.cat([pv, v64], dim=2)
        valid = torch.cat([p_valid, valid], dim=1)
    scores = (k64 @ q.double()[..., None]).squeeze(-1) * scale  # (R, H, L)
    out = _masked_softmax_av(scores[:, :, None, :], valid[:, None, None, :], v64)  # (R, H, 1, D)
    return out.squeeze(2).to(q.dtype)
