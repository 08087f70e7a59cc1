"""The tensors of a running decode batch, for any DecoderGraph (engine/family.py).

Rows are sequences (a beam, a sample, a greedy caption); sources are what they are
conditioned on (one image's states, or one question's states). Each row has its own
self-attention cache and token history; each source has the tensors its graph made for
it once (cross-attention keys/values, or an image prefix), read by all of its rows: they
never get copied per beam.

Storage is preallocated per bucket, as gpt-fast's `setup_caches` does: rows and sources
in powers of two, positions in blocks of LENGTH_BLOCK. It is reallocated only when a
bucket is outgrown (counted in `allocations`), never per step, so every step reads and
writes the same buffers. A step runs on views of the live rows and positions; stepping
whole buckets instead (static shapes, for capturing a step as a CUDA graph) needs no
other storage.

Rows of one group are contiguous and groups keep their order, so source i belongs to
group i. `select` rebuilds the row order after every decision (beams fork and die,
finished rows leave) and moves only the rows whose place changed.
"""

from __future__ import annotations

import torch

from ..family import DecoderGraph, SourceView

LENGTH_BLOCK = 32


def row_bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def length_bucket(n: int) -> int:
    return -(-n // LENGTH_BLOCK) * LENGTH_BLOCK


class DecodeBatch:
    def __init__(self, graph: DecoderGraph):
        self.graph = graph
        self.lookahead = getattr(graph, "lookahead", 0)  # cache positions a step writes past its token
        self.device, self.dtype = graph.device, graph.dtype
        self.rows = self.sources = 0
        self.row_cap = self.len_cap = self.src_cap = self.src_len_cap = 0
        self.allocations = 0  # buffer (re)allocations: only when a bucket is outgrown
        self.k: list[torch.Tensor] = []  # per layer (row_cap, H, len_cap, Dh)
        self.v: list[torch.Tensor] = []
        self.src: list[torch.Tensor] = []  # the graph's per-source tensors, src_cap sources, src_len_cap keys
        self.cache_len = self._zeros((0,), torch.long)  # tokens in each row's cache
        self.history = self._zeros((0, 0), torch.long)  # prompt + chosen tokens
        self.logprob = self._zeros((0,), torch.float32)  # model log-prob so far
        self.pending = self._zeros((0,), torch.long)  # chosen, not yet in the cache
        self.src_len = self._zeros((0,), torch.long)
        self.row_lengths: list[int] = []  # cache_len on the host, to size views without a sync
        self.src_lengths: list[int] = []
        self.groups = None  # (row_src, row_slot, slots) when a source has several rows

    def _zeros(self, shape, dtype=None) -> torch.Tensor:
        return torch.zeros(shape, device=self.device, dtype=dtype or self.dtype)

    # -- capacity -----------------------------------------------------------------------

    def _grow_rows(self, rows: int, length: int) -> None:
        if rows <= self.row_cap and length <= self.len_cap:
            return
        rc, lc = max(row_bucket(rows), self.row_cap), max(length_bucket(length), self.len_cap)
        g = self.graph
        shape = (rc, g.heads, lc, g.head_dim)
        self.k = [_regrow(t, shape, self.rows) for t in self.k] or [self._zeros(shape) for _ in range(g.layers)]
        self.v = [_regrow(t, shape, self.rows) for t in self.v] or [self._zeros(shape) for _ in range(g.layers)]
        self.cache_len = _regrow(self.cache_len, (rc,), self.rows)
        self.logprob = _regrow(self.logprob, (rc,), self.rows)
        self.pending = _regrow(self.pending, (rc,), self.rows)
        self.history = _regrow(self.history, (rc, lc + 1), self.rows)
        self.row_cap, self.len_cap = rc, lc
        self.allocations += 1

    def _grow_sources(self, sources: int, length: int, like: list[torch.Tensor]) -> None:
        if self.src:  # a source that does not fit the pools' shape must fail alone, never reshape them
            d = self.graph.source_length_dim
            for pool, t in zip(self.src, like):
                if pool.shape[1:d] + pool.shape[d + 1:] != t.shape[1:d] + t.shape[d + 1:] or pool.dtype != t.dtype:
                    raise ValueError(f"source of shape {tuple(t.shape)} does not fit the decode batch's "
                                     f"{tuple(pool.shape)}")
        if sources <= self.src_cap and length <= self.src_len_cap and self.src:
            return
        sc, lc = max(row_bucket(sources), self.src_cap), max(length_bucket(length), self.src_len_cap)
        shapes = [self._source_shape(t, sc, lc) for t in like]
        self.src = [_regrow(t, s, self.sources) for t, s in zip(self.src, shapes)] if self.src else \
            [self._zeros(s, t.dtype) for t, s in zip(like, shapes)]
        self.src_len = _regrow(self.src_len, (sc,), self.sources)
        self.src_cap, self.src_len_cap = sc, lc
        self.allocations += 1

    def _source_shape(self, t: torch.Tensor, sources: int, length: int) -> tuple:
        shape = [sources, *t.shape[1:]]
        shape[self.graph.source_length_dim] = length
        return tuple(shape)

    def _keys(self, t: torch.Tensor, length: int) -> torch.Tensor:
        """The first `length` key positions of a source tensor."""
        return t.narrow(self.graph.source_length_dim, 0, length)

    # -- admission ----------------------------------------------------------------------

    def prefill(self, states: torch.Tensor, state_lengths: list[int], prompts: list[list[int]], max_len: int):
        """Add n sources (states (n, Lk, Dw), right-padded) and one row per source with its prompt.

        Returns the next-token logits of the new rows, (n, V) float32.
        """
        n, lk = states.shape[0], states.shape[1]
        s0, r0 = self.sources, self.rows
        self._grow_rows(r0 + n, max_len + self.lookahead)
        src_len = torch.tensor(state_lengths, dtype=torch.long, device=self.device)
        pad = None
        if min(state_lengths) < lk:
            pad = torch.arange(lk, device=self.device)[None, :] >= src_len[:, None]  # (n, Lk)
        new = self.graph.source_tensors(states)
        self._grow_sources(s0 + n, lk, new)
        for pool, t in zip(self.src, new):
            self._keys(pool[s0:s0 + n], lk).copy_(t)
        self.src_len[s0:s0 + n] = src_len

        lp = max(len(p) for p in prompts)
        ids = torch.tensor([p + [p[0]] * (lp - len(p)) for p in prompts], dtype=torch.long, device=self.device)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        cache = [(k[r0:r0 + n], v[r0:r0 + n]) for k, v in zip(self.k, self.v)]
        logits = self.graph.prefill(ids, lengths, cache, SourceView(new, pad))
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
        span = kv_len + self.lookahead
        cache = [(k[:r, :, :span], v[:r, :, :span]) for k, v in zip(self.k, self.v)]
        pad = None
        if min(self.src_lengths) < src_max:
            pad = torch.arange(src_max, device=self.device)[None, :] >= self.src_len[:s, None]
        view = SourceView([self._keys(t[:s], src_max) for t in self.src], pad, self.groups)
        logits = self.graph.step(self.pending[:r], self.cache_len[:r], cache, view, self.history[:r, :kv_len])
        self.cache_len[:r] += 1
        self.row_lengths = [n + 1 for n in self.row_lengths]
        return logits

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
    """(row_src, row_slot, slots) for shared source tensors, or None when every source has one row."""
    if all(s == 1 for s in sizes):
        return None
    row_src = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                      torch.tensor(sizes, device=device))
    row_slot = torch.cat([torch.arange(s, device=device) for s in sizes if s > 0])
    return row_src, row_slot, max(sizes)
