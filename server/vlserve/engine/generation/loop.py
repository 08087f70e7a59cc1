"""The decode loop: continuous batching over sequence groups.

Each `step` feeds every running row its pending token, prefills newly admitted groups,
lets every group choose its next tokens, and retires finished groups. A static batch
(`generate`) is the same loop with everything admitted at once, so batched and
one-by-one generation run the same code.
"""

from __future__ import annotations

import contextlib

import torch

from ...errors import InvalidInputError
from ..family import DecoderGraph, Source
from .batch import DecodeBatch
from .groups import BeamGroup, Group, Hypothesis, SampledGroup, make_group
from .params import GenerationParams
from .processors import repetition_penalty, suppress_token, warp

MAX_RESTARTS = 1  # reruns of a group after a batch step failed under it


class DecodeLoop:
    def __init__(self, graph: DecoderGraph, max_rows: int | None = None):
        self.graph = graph
        self.batch = DecodeBatch(graph)
        self.eos = graph.eos_id
        self.max_rows = max_rows
        self.groups: list[Group] = []
        self.waiting: list[Group] = []

    @property
    def busy(self) -> bool:
        return bool(self.groups or self.waiting)

    @property
    def running_rows(self) -> int:
        return sum(g.max_rows for g in self.groups)

    def add(self, group: Group) -> None:
        self.waiting.append(group)

    def drop(self, group: Group) -> bool:
        """Cancel a group: it is removed before the next step. False if it already finished."""
        if group in self.waiting:
            self.waiting.remove(group)
            return True
        if group in self.groups and not group.done:
            group.done = True  # _retire discards its rows at the next decision
            group.results = []
            return True
        return False

    @torch.inference_mode()
    def step(self) -> list[Group]:
        """One decoding step for every running row; returns the groups that finished
        (a group that failed is finished with `error` set, its neighbours untouched)."""
        failed: list[Group] = []
        parts = []
        if self.groups:
            try:
                parts.append(self.batch.step())
            except Exception as exc:  # noqa: BLE001 - the batch is suspect: rerun its groups
                failed += self._restart_running(exc)
        admitted = self._admit()
        if admitted:
            logits, admitted, bad = self._prefill_isolated(admitted)
            failed += bad
            if admitted:
                parts.append(logits)
                self.groups += admitted
        if not parts:
            return failed
        return failed + self._decide(torch.cat(parts) if len(parts) > 1 else parts[0])

    def _restart_running(self, error: BaseException) -> list[Group]:
        """A step over the whole batch failed: no row is to blame yet, so every running
        group goes back to its prompt, in a fresh batch, ahead of the queue. Prefill then
        isolates a group that fails on its own; one that fails a step twice is given up."""
        self.batch = DecodeBatch(self.graph)
        again, given_up = [], []
        for g in self.groups:
            if g.restarts >= MAX_RESTARTS:
                g.fail(error)
                given_up.append(g)
            else:
                g.restarts += 1
                g.reset()
                again.append(g)
        self.groups = []
        self.waiting[:0] = again
        return given_up

    def _prefill_isolated(self, groups: list[Group]):
        """Prefill groups together; if that fails, one by one, failing only those at fault.
        Returns (logits of the admitted rows, admitted groups, failed groups)."""
        try:
            return self._prefill(groups), groups, []
        except Exception as exc:  # noqa: BLE001
            if len(groups) == 1:
                groups[0].fail(exc)
                return None, [], groups
        parts, ok, failed = [], [], []
        for g in groups:
            logits, admitted, bad = self._prefill_isolated([g])
            failed += bad
            if admitted:
                parts.append(logits)
                ok += admitted
        return (torch.cat(parts) if parts else None), ok, failed

    def _admit(self) -> list[Group]:
        room = None if self.max_rows is None else self.max_rows - self.running_rows
        admitted = []
        while self.waiting and (room is None or self.waiting[0].max_rows <= room or not (self.groups or admitted)):
            g = self.waiting.pop(0)
            admitted.append(g)
            if room is not None:
                room -= g.max_rows
        return admitted

    def _prefill(self, groups: list[Group]) -> torch.Tensor:
        lk = max(g.states.shape[0] for g in groups)
        width = groups[0].states.shape[1]
        states = groups[0].states.new_zeros((len(groups), lk, width))  # right-padded sources
        for i, g in enumerate(groups):
            states[i, : g.states.shape[0]] = g.states
            g.rows = 1
        return self.batch.prefill(states, [g.state_length for g in groups], [g.prompt for g in groups],
                                  max(g.max_len for g in groups))

    def _decide(self, logits: torch.Tensor) -> list[Group]:
        raw_lp = logits.log_softmax(dim=-1)  # (R, V) the model's own log-probabilities
        offsets, off = [], 0
        for g in self.groups:
            offsets.append(off)
            off += g.rows
        live = [(g, o) for g, o in zip(self.groups, offsets) if not g.done]
        sampled = [(g, o) for g, o in live if isinstance(g, SampledGroup)]
        choices = self._decide_sampled_isolated(logits, raw_lp, sampled)
        for g, o in live:
            if isinstance(g, BeamGroup):
                try:
                    choices[id(g)] = g.decide(self.batch, o, raw_lp, self.eos)
                except Exception as exc:  # noqa: BLE001 - only this group's choice failed
                    g.fail(exc)
        return self._retire(choices)

    def _decide_sampled_isolated(self, logits, raw_lp, groups) -> dict:
        """Greedy and sampled groups decide in bulk; if that fails, each alone, so only a
        group whose own choice fails is failed. Generators are rewound for the retry, so
        a seeded neighbour draws exactly what it would have drawn."""
        if not groups:
            return {}
        rng = [(g, g.generator.get_state()) for g, _ in groups if g.generator is not None]
        try:
            return self._decide_sampled(logits, raw_lp, groups)
        except Exception as exc:  # noqa: BLE001
            if len(groups) == 1:
                groups[0][0].fail(exc)
                return {}
        for g, state in rng:
            g.generator.set_state(state)
        choices = {}
        for one in groups:
            choices.update(self._decide_sampled_isolated(logits, raw_lp, [one]))
        return choices

    def _decide_sampled(self, logits, raw_lp, groups) -> dict:
        """Greedy and sampled rows of the given (group, offset)s at once, per-row parameters."""
        rows, owners, counts = [], [], []
        for g, o in groups:
            r = g.decision_rows(o)
            rows += r
            owners += [g] * len(r)
            counts.append(len(r))
        device = logits.device
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        scores = logits[idx]

        def per_row(fn, dtype=torch.float32):
            return torch.tensor([fn(g.params) for g in owners], dtype=dtype, device=device)

        penalty = per_row(lambda p: p.repetition_penalty)
        if any(g.params.repetition_penalty != 1.0 for g in owners):
            scores = repetition_penalty(scores, self.batch.histories(idx), penalty)
        early = torch.tensor([g.generated < g.params.min_new_tokens for g in owners], device=device)
        if any(g.generated < g.params.min_new_tokens for g in owners):
            scores = suppress_token(scores, self.eos, early)
        tokens = scores.argmax(dim=-1)
        sampled = [i for i, g in enumerate(owners) if g.params.do_sample]
        if sampled:
            warped = warp(scores, per_row(lambda p: p.temperature), per_row(lambda p: p.top_k, torch.long),
                          per_row(lambda p: p.top_p))
            probs = warped.softmax(dim=-1)
            start = 0
            for (g, _), n in zip(groups, counts):
                if g.params.do_sample:
                    draw = torch.multinomial(probs[start:start + n], 1, generator=g.generator)[:, 0]
                    tokens[start:start + n] = draw
                start += n
        model_lp = self.batch.logprob[idx] + raw_lp[idx, tokens]
        return self._split_sampled(groups, rows, tokens, model_lp)

    def _split_sampled(self, groups, rows, tokens, model_lp) -> dict:
        choices, token_l, lp_l, start = {}, tokens.tolist(), model_lp.tolist(), 0
        for g, _ in groups:
            n = len(g.active)
            parents, keep, active = [], [], []
            for i in range(start, start + n):
                sample, t = g.active[i - start], token_l[i]
                if g.listener is not None and t != self.eos:
                    with contextlib.suppress(Exception):  # a listener never breaks the batch
                        g.listener(sample, g.generated, t, lp_l[i])
                if t == self.eos or g.generated + 1 >= g.params.max_new_tokens:
                    seq = self.batch.tokens_of(rows[i])[len(g.prompt):]
                    ended = t == self.eos
                    seq = seq if ended else seq + [t]
                    g.finish_sample(sample, Hypothesis(seq, lp_l[i], lp_l[i], ended))
                else:
                    parents.append(rows[i])
                    keep.append(i)
                    active.append(sample)
            g.active = active
            g.generated += 1
            k = torch.tensor(keep, dtype=torch.long, device=tokens.device)
            choices[id(g)] = (parents, tokens[k], model_lp[k])
            start += n
        return choices

    def _retire(self, choices: dict) -> list[Group]:
        parents, tokens, lps, keep_sources, sizes, alive, finished = [], [], [], [], [], [], []
        for i, g in enumerate(self.groups):
            p, t, lp = choices.get(id(g), ([], [], []))
            if g.done or not p:
                g.done, g.rows = True, 0
                finished.append(g)
                continue
            parents += p
            tokens.append(t)
            lps.append(lp)
            keep_sources.append(i)
            sizes.append(len(p))
            g.rows = len(p)
            alive.append(g)
        device = self.batch.device
        tok = torch.cat(tokens) if tokens else torch.zeros(0, dtype=torch.long, device=device)
        lp = torch.cat(lps) if lps else torch.zeros(0, device=device)
        self.batch.select(parents, tok, lp, keep_sources, sizes)
        self.groups = alive
        return finished


def make_groups(graph: DecoderGraph, sources: list[Source], prompts: list[list[int]],
                params: list[GenerationParams]) -> list[Group]:
    """One group per source; refuses a prompt + max_new_tokens past the decoder's positions."""
    for p, prm in zip(prompts, params):
        if len(p) + prm.max_new_tokens > graph.max_positions:
            raise InvalidInputError(f"prompt ({len(p)} tokens) + max_new_tokens ({prm.max_new_tokens}) exceeds "
                                    f"the decoder's {graph.max_positions} positions", param="max_new_tokens")
    return [make_group(p, prm, src.states, src.length) for src, p, prm in zip(sources, prompts, params)]


@torch.inference_mode()
def generate(graph: DecoderGraph, groups: list[Group]) -> list[list[Hypothesis]]:
    """Run groups to completion as one static batch."""
    loop = DecodeLoop(graph)
    for g in groups:
        loop.add(g)
    while loop.busy:
        loop.step()
    failed = next((g.error for g in groups if g.error is not None), None)
    if failed is not None:
        raise failed
    return [g.results for g in groups]
