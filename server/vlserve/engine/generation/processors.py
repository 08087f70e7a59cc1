"""Logit processors, vectorised over rows with per-row parameters.

Semantics follow transformers' processors of the same names, so greedy and beam search
pick the same tokens: repetition penalty over every token already in the sequence
(BOS and prompt included), EOS suppressed until min_new_tokens, then temperature, top-k
and top-p (nucleus, keeping at least one token) for sampling.
"""

from __future__ import annotations

import torch


def repetition_penalty(scores: torch.Tensor, history: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """scores (N, V); history (N, T) token ids (padding repeats a real token); penalty (N,)."""
    seen = scores.gather(1, history)
    p = penalty[:, None]
    return scores.scatter(1, history, torch.where(seen < 0, seen * p, seen / p))


def suppress_token(scores: torch.Tensor, token: int, rows: torch.Tensor) -> torch.Tensor:
    """Set `token` to -inf on the rows where `rows` (N,) bool is True."""
    column = scores[:, token].masked_fill(rows, float("-inf"))
    out = scores.clone()
    out[:, token] = column
    return out


def warp(scores: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor):
    """Temperature, then top-k (0 = off), then top-p (1 = off); filtered tokens become -inf."""
    scores = scores / temperature[:, None]
    ordered, order = scores.sort(dim=-1, descending=True)  # (N, V), best first
    rank = torch.arange(scores.shape[-1], device=scores.device)[None, :]
    remove = (rank >= top_k[:, None]) & (top_k[:, None] > 0)
    probs = ordered.masked_fill(remove, float("-inf")).softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked higher
    remove |= mass_above >= top_p[:, None]
    remove[:, 0] = False  # the best token always survives
    return scores.masked_fill(torch.zeros_like(remove).scatter(1, order, remove), float("-inf"))
