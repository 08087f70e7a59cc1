"""Fault isolation in the decode loop: a group whose own work fails is failed alone; its
neighbours finish with exactly what they produce without it (issue 14, item 1)."""

import pytest
import torch

from vlserve.engine.generation.groups import BeamGroup, SampledGroup, make_group
from vlserve.engine.generation.loop import DecodeLoop
from vlserve.engine.generation.params import GenerationParams

GREEDY = GenerationParams(max_new_tokens=8, min_new_tokens=8)
SAMPLED = GenerationParams(max_new_tokens=8, min_new_tokens=8, do_sample=True, seed=3, num_return=2)
BEAMS = GenerationParams(max_new_tokens=8, min_new_tokens=8, num_beams=3)


class Boom(RuntimeError):
    pass


class ExplodingSampled(SampledGroup):
    """Fails its own decision at its third step, inside the bulk decision of every sampled row."""

    def decision_rows(self, offset):
        if self.generated == 2:
            raise Boom("bad sampled group")
        return super().decision_rows(offset)


class ExplodingBeams(BeamGroup):
    def decide(self, batch, offset, raw_lp, eos):
        if self.generated == 2:
            raise Boom("bad beam group")
        return super().decide(batch, offset, raw_lp, eos)


@pytest.fixture(scope="module")
def states(engine):
    px = torch.randn((4, 3, 32, 32), generator=torch.Generator().manual_seed(21))
    return engine.encode_images(px)


def group(engine, states, i, params, kind=None):
    g = make_group([engine.tokenizer.dec_id], params, states[i], states.shape[1])
    if kind is not None:
        g = kind(prompt=g.prompt, params=params, states=g.states, state_length=g.state_length)
    return g


def run(loop, groups):
    for g in groups:
        loop.add(g)
    finished = []
    with torch.inference_mode():
        while loop.busy:
            finished += loop.step()
    return finished


def tokens(g):
    return [h.tokens for h in g.results]


def neighbours(engine, states):
    return [group(engine, states, 0, GREEDY), group(engine, states, 1, SAMPLED), group(engine, states, 2, BEAMS)]


@pytest.fixture(scope="module")
def clean(engine, states):
    groups = neighbours(engine, states)
    run(DecodeLoop(engine.caption_decoder), groups)
    return [tokens(g) for g in groups]


@pytest.mark.parametrize("params,kind", [(SAMPLED, ExplodingSampled), (GREEDY, ExplodingSampled),
                                         (BEAMS, ExplodingBeams)])
def test_a_failing_decision_fails_only_its_group(engine, states, clean, params, kind):
    groups = neighbours(engine, states)
    bad = group(engine, states, 3, params, kind)
    finished = run(DecodeLoop(engine.caption_decoder), groups[:2] + [bad] + groups[2:])
    assert isinstance(bad.error, Boom) and bad.results == [] and bad in finished
    assert all(g.error is None for g in groups)
    assert [tokens(g) for g in groups] == clean  # seeded samples included: generators were rewound


def test_a_failing_prefill_fails_only_its_group(engine, states, clean):
    groups = neighbours(engine, states)
    wrong = torch.randn(states.shape[1], states.shape[2] + 1)  # a source the decoder cannot read
    bad = make_group([engine.tokenizer.dec_id], GREEDY, wrong, wrong.shape[0])
    run(DecodeLoop(engine.caption_decoder), [groups[0], bad, groups[1], groups[2]])
    assert bad.error is not None and bad.results == []
    assert [tokens(g) for g in groups] == clean


def test_a_failed_batch_step_reruns_its_groups(engine, states, clean, monkeypatch):
    loop = DecodeLoop(engine.caption_decoder)
    groups = neighbours(engine, states)
    real, calls = type(loop.batch).step, []

    def flaky(self):
        calls.append(1)
        if len(calls) == 3:
            raise Boom("device hiccup")
        return real(self)

    monkeypatch.setattr(type(loop.batch), "step", flaky)
    run(loop, groups)
    assert all(g.error is None for g in groups)
    assert [tokens(g) for g in groups] == clean  # rerun from the prompt: same seeded result
    assert all(g.restarts == 1 for g in groups)


def test_a_batch_step_that_always_fails_gives_up_after_one_rerun(engine, states, monkeypatch):
    loop = DecodeLoop(engine.caption_decoder)
    groups = neighbours(engine, states)

    def broken(self):
        raise Boom("broken device")

    monkeypatch.setattr(type(loop.batch), "step", broken)
    finished = run(loop, groups)
    assert all(isinstance(g.error, Boom) for g in groups) and set(map(id, finished)) == set(map(id, groups))
    assert not loop.busy
