"""The tensors of a running decode batch.

Rows are sequences (a beam, a sample, a greedy caption); sources are what they are
conditioned on (one image's states, or one question's states). Each row has its own
self-attention cache and token history; each source has its cross-attention keys/values,
computed once and read by all of its rows (they never get copied per beam).

Rows of one group are contiguous and groups keep their order, so source i belongs to
group i. `select` rebuilds the row order after every decision (beams fork and die,
finished rows leave) and moves only the rows whose place changed.
"""

from __future__ import annotations

import torch

from ...models.blip.cross import MODES, AbsorbedCross, CachedCross
from ...models.blip.text import TextDecoder


class DecodeBatch:
    def __init__(self, decoder: TextDecoder, cross_mode: str = "cached"):
        if cross_mode not in MODES:
            raise ValueError(f"cross_mode must be one of {MODES}, got {cross_mode!r}")
        self.decoder = decoder
        self.cross_mode = cross_mode
        cfg = decoder.bert.config
        p = decoder.cls.predictions.decoder.weight
        self.device, self.dtype = p.device, p.dtype
        self.layers = cfg.num_hidden_layers
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.rows = 0
        self.sources = 0
        self.row_cap = self.len_cap = self.src_cap = self.src_len_cap = 0
        self.k: list[torch.Tensor] = []  # per layer (row_cap, H, len_cap, Dh)
        self.v: list[torch.Tensor] = []
        # cached: per layer keys then values (src_cap, H, src_len_cap, Dh); absorbed: states (src_cap, len, Dw)
        self.src: list[torch.Tensor] = []
        self.cache_len = torch.zeros(0, dtype=torch.long, device=self.device)  # tokens in each row's cache
        self.history = torch.zeros((0, 0), dtype=torch.long, device=self.device)  # prompt + chosen tokens
        self.logprob = torch.zeros(0, dtype=torch.float32, device=self.device)  # model log-prob so far
        self.pending = torch.zeros(0, dtype=torch.long, device=self.device)  # chosen, not yet in cache
        self.src_len = torch.zeros(0, dtype=torch.long, device=self.device)
        self.row_lengths: list[int] = []  # cache_len on the host, to size views without a sync
        self.src_lengths: list[int] = []
        self.groups = None  # (row_src, row_slot, slots) when a source has several rows

    # -- capacity -----------------------------------------------------------------------

    def _grow_rows(self, rows: int, length: int) -> None:
        if rows <= self.row_cap and length <= self.len_cap:
            return
        rc, lc = max(rows, 2 * self.row_cap), max(length, self.len_cap)
        shape = (rc, self.heads, lc, self.head_dim)
        self.k = [_regrow(t, shape, self.rows) for t in self.k] or [self._zeros(shape) for _ in range(self.layers)]
        self.v = [_regrow(t, shape, self.rows) for t in self.v] or [self._zeros(shape) for _ in range(self.layers)]
        self.cache_len = _regrow(self.cache_len, (rc,), self.rows)
        self.logprob = _regrow(self.logprob, (rc,), self.rows)
        self.pending = _regrow(self.pending, (rc,), self.rows)
        self.history = _regrow(self.history, (rc, lc + 1), self.rows)
        self.row_cap, self.len_cap = rc, lc

    def _grow_sources(self, sources: int, length: int) -> None:
        if sources <= self.src_cap and length <= self.src_len_cap:
            return
        sc, lc = max(sources, 2 * self.src_cap), max(length, self.src_len_cap)
        self.src = [_regrow(t, self._src_shape(t, sc, lc), self.sources) for t in self.src]
        self.src_len = _regrow(self.src_len, (sc,), self.sources)
        self.src_cap, self.src_len_cap = sc, lc

    def _src_shape(self, t: torch.Tensor, sources: int, length: int):
        if self.cross_mode == "cached":
            return (sources, t.shape[1], length, t.shape[3])
        return (sources, length, t.shape[2])

    def _zeros(self, shape):
        return torch.zeros(shape, device=self.device, dtype=self.dtype)

    # -- admission ----------------------------------------------------------------------

    def prefill(self, states: torch.Tensor, state_lengths: list[int], prompts: list[list[int]], max_len: int):
        """Add n sources (states (n, Lk, Dw), right-padded) and one row per source with its prompt.

        Returns the next-token logits of the new rows, (n, V) float32.
        """
        n, lk = states.shape[0], states.shape[1]
        s0, r0 = self.sources, self.rows
        self._grow_rows(r0 + n, max_len)
        src_len = torch.tensor(state_lengths, dtype=torch.long, device=self.device)
        cross_pad = None
        if min(state_lengths) < lk:
            cross_pad = torch.arange(lk, device=self.device)[None, :] >= src_len[:, None]  # (n, Lk)
        states = states.to(self.dtype)
        if self.cross_mode == "cached":
            kv = self.decoder.bert.cross_kv(states)
            new = [k for k, _ in kv] + [v for _, v in kv]
            cross = CachedCross(kv, cross_pad)
        else:
            new = [states]
            cross = AbsorbedCross(states, cross_pad)
        if s0 == 0:  # an empty pool: adopt the new tensors instead of copying them
            self.src = [t.contiguous() for t in new]
            self.src_len = torch.zeros(n, dtype=torch.long, device=self.device)
            self.src_cap, self.src_len_cap = n, lk
        else:
            self._grow_sources(s0 + n, lk)
            for pool, t in zip(self.src, new):
                if self.cross_mode == "cached":
                    pool[s0:s0 + n, :, :lk] = t
                else:
                    pool[s0:s0 + n, :lk] = t
        self.src_len[s0:s0 + n] = src_len

        lp = max(len(p) for p in prompts)
        ids = torch.tensor([p + [p[0]] * (lp - len(p)) for p in prompts], dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        cache = [(k[r0:r0 + n], v[r0:r0 + n]) for k, v in zip(self.k, self.v)]
        hidden = self.decoder.bert.prefill(ids, lengths, cache, cross)  # (n, Lp, Dt)
        last = hidden[torch.arange(n, device=self.device), lengths - 1]  # (n, Dt)
        logits = self.decoder.cls(last).float()
        # commit only now: a prefill that raised leaves the running rows and sources as they were
        self.src_lengths += list(state_lengths)
        self.sources += n
        self.history[r0:r0 + n, :lp] = ids
        self.cache_len[r0:r0 + n] = lengths
        self.logprob[r0:r0 + n] = 0
        self.row_lengths += [len(p) for p in prompts]
        self.rows += n
        return logits

    # -- decoding -----------------------------------------------------------------------

    def step(self) -> torch.Tensor:
        """Feed every row its pending token; returns next-token logits (R, V) float32."""
        r, s = self.rows, self.sources
        kv_len = max(self.row_lengths) + 1
        src_max = max(self.src_lengths)
        positions = self.cache_len[:r]
        cache = [(k[:r, :, :kv_len], v[:r, :, :kv_len]) for k, v in zip(self.k, self.v)]
        cross_pad = None
        if min(self.src_lengths) < src_max:
            cross_pad = torch.arange(src_max, device=self.device)[None, :] >= self.src_len[:s, None]
        if self.cross_mode == "cached":
            half = len(self.src) // 2
            kv = [(k[:s, :, :src_max], v[:s, :, :src_max]) for k, v in zip(self.src[:half], self.src[half:])]
            cross = CachedCross(kv, cross_pad, self.groups)
        else:
            cross = AbsorbedCross(self.src[0][:s, :src_max], cross_pad, self.groups)
        hidden = self.decoder.bert.step(self.pending[:r], positions, cache, cross)
        self.cache_len[:r] += 1
        self.row_lengths = [n + 1 for n in self.row_lengths]
        return self.decoder.cls(hidden).float()

    def histories(self, rows: torch.Tensor) -> torch.Tensor:
        """Token histories of the given rows (N, T), padded with each row's first token."""
        h = self.history[rows, : max(self.row_lengths)]
        valid = torch.arange(h.shape[1], device=self.device)[None, :] < self.cache_len[rows][:, None]
        return torch.where(valid, h, h[:, :1])

    def tokens_of(self, row: int) -> list[int]:
        return self.history[row, : self.row_lengths[row]].tolist()

    def select(self, parents: list[int], tokens: torch.Tensor, logprobs: torch.Tensor,
               keep_sources: list[int], group_sizes: list[int]) -> None:
        """New row i continues old row parents[i] with tokens[i]; sources keep_sources survive."""
        n = len(parents)
        self._grow_rows(n, self.len_cap)
        idx = torch.tensor(parents, dtype=torch.long, device=self.device)
        moved = [i for i, p in enumerate(parents) if p != i]
        if moved:
            dst = torch.tensor(moved, dtype=torch.long, device=self.device)
            src = idx[dst]
            length = max(self.row_lengths) if self.row_lengths else 0
            for t in self.k + self.v:
                t[dst, :, :length] = t[src, :, :length]
            for t in (self.cache_len, self.history):
                t[dst] = t[src]
        self.row_lengths = [self.row_lengths[p] for p in parents]
        self.rows = n
        if n:
            self.logprob[:n] = logprobs
            self.pending[:n] = tokens
            self.history[torch.arange(n, device=self.device), self.cache_len[:n]] = tokens
        self._select_sources(keep_sources)
        self.groups = _grouping(group_sizes, self.device)

    def _select_sources(self, keep: list[int]) -> None:
        moved = [i for i, s in enumerate(keep) if s != i]
        if moved:
            dst = torch.tensor(moved, dtype=torch.long, device=self.device)
            src = torch.tensor([keep[i] for i in moved], dtype=torch.long, device=self.device)
            for t in self.src:
                t[dst] = t[src]
            self.src_len[dst] = self.src_len[src]
        self.src_lengths = [self.src_lengths[s] for s in keep]
        self.sources = len(keep)


def _regrow(t: torch.Tensor, shape, used: int) -> torch.Tensor:
    """A larger zeroed tensor holding t's first `used` rows (and all of its other extents)."""
    out = torch.zeros(shape, dtype=t.dtype, device=t.device)
    region = (slice(0, used),) + tuple(slice(0, s) for s in t.shape[1:])
    out[region] = t[region]
    return out


def _grouping(sizes: list[int], device):
    """(row_src, row_slot, slots) for shared cross keys, or None when every source has one row."""
    if all(s == 1 for s in sizes):
        return None
    row_src = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                      torch.tensor(sizes, device=device))
    row_slot = torch.cat([torch.arange(s, device=device) for s in sizes if s > 0])
    return row_src, row_slot, max(sizes)
