"""Sequence groups: the unit of work of the decode loop.

A group is everything generated for one source (one image, or one question) under one
set of parameters: a greedy caption, n sampled captions, or a beam search. Each decision
takes the group's rows' logits and says which rows continue with which token.

Beam search follows transformers' algorithm step for step (2·num_beams candidates,
length penalty on the generated length, its early-stop heuristic), so it returns the
same sequences; it runs per group, so a group's result never depends on its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .params import GenerationParams
from .processors import repetition_penalty

NEG = -1.0e9  # transformers' "impossible" score


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids after BOS and prompt, EOS excluded
    logprob: float  # the model's log-probability of the generated ids (EOS included when emitted)
    score: float  # what ranked it: beam score (length-penalised), else the log-probability
    finished: bool  # ended with EOS (False: stopped at max_new_tokens)


@dataclass(eq=False)  # groups are compared by identity
class Group:
    prompt: list[int]
    params: GenerationParams
    states: torch.Tensor  # (Lk, Dw) the source the rows cross-attend
    state_length: int  # keys of `states` that are real (the rest is padding)
    rows: int = 0
    generated: int = 0
    done: bool = False
    results: list[Hypothesis] = field(default_factory=list)
    ticket: object = None  # the scheduler's handle (a future); unused by the engine
    error: BaseException | None = None  # set when the group failed; its rows are gone
    restarts: int = 0  # times it was re-run from its prompt after a failed step
    listener: object = None  # sampled groups: called (sample, position, token, log-prob so far) per chosen
    #                          token, on the loop's thread; a re-run repeats positions (same tokens if seeded)

    def __post_init__(self):  # subclasses set up their own state
        pass

    def fail(self, error: BaseException) -> None:
        self.done, self.error, self.results = True, error, []

    def reset(self) -> None:
        """Back to its prompt, as if never admitted (a seeded group then repeats itself)."""
        self.rows = self.generated = 0
        self.done, self.results = False, []
        self.__post_init__()

    @property
    def max_len(self) -> int:
        return len(self.prompt) + self.params.max_new_tokens

    @property
    def max_rows(self) -> int:
        return max(self.params.num_beams, self.params.num_return)


class SampledGroup(Group):
    """Greedy (one row) or sampling (num_return independent rows); decided in bulk by the loop."""

    def __post_init__(self):
        self.active: list[int] = []  # sample index of each current row
        self.slots: list[Hypothesis | None] = [None] * self.params.num_return
        self.generator = None
        if self.params.do_sample:
            self.generator = torch.Generator(device=self.states.device)
            if self.params.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(self.params.seed)

    def decision_rows(self, offset: int) -> list[int]:
        """Rows whose logits feed this step's choices; the prefill row serves every sample."""
        if self.generated == 0:
            self.active = list(range(self.params.num_return))
            return [offset] * self.params.num_return
        return list(range(offset, offset + self.rows))

    def finish_sample(self, index: int, hyp: Hypothesis) -> None:
        self.slots[index] = hyp
        if all(s is not None for s in self.slots):
            self.done = True
            self.results = list(self.slots)


class BeamGroup(Group):
    def __post_init__(self):
        nb = self.params.num_beams
        self.running = None  # (rows,) cumulative processed log-probs of the running beams
        self.slot_scores = torch.full((nb,), NEG)  # finished hypotheses, best first
        self.slot_done = [False] * nb
        self.slot_hyps: list[Hypothesis | None] = [None] * nb

    def decide(self, batch, offset: int, raw_lp: torch.Tensor, eos: int):
        """raw_lp (R, V) model log-probs of all rows. Returns (parents, tokens, logprobs)."""
        p, nb = self.params, self.params.num_beams
        rows = torch.arange(offset, offset + self.rows, device=raw_lp.device)
        lp = raw_lp[rows]  # (n, V)
        if p.repetition_penalty != 1.0:
            lp = repetition_penalty(lp, batch.histories(rows), torch.full((self.rows,), p.repetition_penalty,
                                                                          device=lp.device))
        if self.generated < p.min_new_tokens:
            lp = lp.clone()
            lp[:, eos] = float("-inf")
        running = self.running if self.running is not None else torch.zeros(1, device=lp.device)
        vocab = lp.shape[1]
        values, flat = torch.topk((lp + running[:, None]).reshape(-1), k=2 * nb)
        beam, token = flat // vocab, flat % vocab
        gen_len = self.generated + 1
        hits = (token == eos) | (gen_len >= p.max_new_tokens)
        model_lp = batch.logprob[rows][beam] + raw_lp[rows[beam], token]

        run_scores = values + hits.float() * NEG
        nxt = torch.topk(run_scores, k=nb).indices

        top_mask = torch.arange(2 * nb, device=lp.device) < nb
        did = hits & top_mask
        fin = values / (gen_len ** p.length_penalty) + (~did).float() * NEG
        merged = torch.cat([self.slot_scores.to(fin.device), fin])
        keep = torch.topk(merged, k=nb).indices.tolist()
        beam_l, token_l, did_l, model_l = beam.tolist(), token.tolist(), did.tolist(), model_lp.tolist()
        fin_l = fin.tolist()
        scores, done, hyps = [], [], []
        for j in keep:
            if j < nb:
                scores.append(self.slot_scores[j].item())
                done.append(self.slot_done[j])
                hyps.append(self.slot_hyps[j])
                continue
            c = j - nb
            seq = batch.tokens_of(offset + beam_l[c])[len(self.prompt):] + [token_l[c]]
            ended = token_l[c] == eos
            scores.append(fin_l[c])
            done.append(did_l[c])
            hyps.append(Hypothesis(seq[:-1] if ended else seq, model_l[c], fin_l[c], ended))
        self.slot_scores = torch.tensor(scores)
        self.slot_done, self.slot_hyps = done, hyps
        self.generated = gen_len

        best_running = run_scores[nxt[0]].cpu() / (gen_len ** p.length_penalty)
        can_improve = not all(done) or bool(best_running > self.slot_scores.min())
        if not can_improve or gen_len >= p.max_new_tokens:
            self.done = True
            self.results = [h for h in hyps[: p.num_return] if h is not None]
            return [], [], []
        self.running = run_scores[nxt]
        parents = [offset + b for b in beam[nxt].tolist()]
        return parents, token[nxt], model_lp[nxt]


def make_group(prompt, params: GenerationParams, states, state_length) -> Group:
    kind = BeamGroup if params.num_beams > 1 else SampledGroup
    return kind(prompt=list(prompt), params=params, states=states, state_length=state_length)
