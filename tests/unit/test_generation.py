"""Sampling, processors, beam scores, min length, batched-vs-single and continuous batching."""

import asyncio
import math

import pytest
import torch

from tests.helpers.tiny_blip import SEP_ID
from vlserve.engine.generation.groups import make_group
from vlserve.engine.generation.loop import DecodeLoop
from vlserve.engine.generation.params import GenerationParams
from vlserve.engine.generation.processors import repetition_penalty, warp
from vlserve.errors import InvalidInputError
from tests.helpers.tasks import task_model
from vlserve.families.blip.decoder import BlipDecoderGraph
from vlserve.engine.generation.loop import generate, make_groups
from vlserve.tasks.caption import caption as caption_task


def pixels(n, seed=0, size=32):
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


def caption(engine, px, prompt=None, **params):
    return asyncio.run(caption_task(task_model(engine), px, prompt=prompt,
                                          params=GenerationParams(**params)))


def groups_for(engine, px, prompts, params):
    states = engine.encode_images(px)
    prompt_ids = [engine.tokenizer.encode_prompt(p) for p in prompts]
    return make_groups(engine.caption_decoder, engine.caption_sources(states), prompt_ids, [params] * len(px))


# -- processors --------------------------------------------------------------------------

def test_repetition_penalty_formula():
    scores = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
    out = repetition_penalty(scores, torch.tensor([[0, 1, 1]]), torch.tensor([2.0]))
    # seen tokens: positive scores divided, negative multiplied; unseen untouched
    assert out.tolist() == [[1.0, -2.0, 0.5, -3.0]]


def test_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    one = torch.ones(1)
    def kept(k, p):
        return torch.isfinite(warp(logits, one, torch.tensor([k]), torch.tensor([p])))[0].tolist()
    assert kept(2, 1.0) == [True, True, False, False]
    assert kept(0, 0.75) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.75
    assert kept(0, 0.8) == [True, True, False, False]
    assert kept(0, 0.81) == [True, True, True, False]
    assert kept(0, 0.01) == [True, False, False, False]  # the best token always survives
    assert kept(0, 1.0) == [True, True, True, True]


def test_temperature_scales_logits():
    logits = torch.tensor([[1.0, 2.0]])
    out = warp(logits, torch.tensor([0.5]), torch.tensor([0]), torch.tensor([1.0]))
    assert out.tolist() == [[2.0, 4.0]]


# -- parameters --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    dict(max_new_tokens=0), dict(min_new_tokens=-1), dict(min_new_tokens=30, max_new_tokens=20),
    dict(num_beams=17), dict(temperature=float("nan")), dict(temperature=0.0), dict(top_p=0.0),
    dict(top_k=-1), dict(repetition_penalty=0), dict(num_beams=3, do_sample=True),
    dict(num_return=2), dict(num_beams=2, num_return=3), dict(length_penalty=float("inf")),
    # values that pass a naive "> 0" check but overflow a step (issue 14)
    dict(do_sample=True, top_k=10**19), dict(do_sample=True, temperature=1e-46), dict(length_penalty=1e308),
    dict(repetition_penalty=1e-46), dict(repetition_penalty=1e300), dict(seed=-10**19), dict(seed=2**64),
])
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(InvalidInputError) as err:
        GenerationParams(**bad).validate()
    assert err.value.param


def test_prompt_plus_length_over_positions(engine):
    with pytest.raises(InvalidInputError, match="exceeds"):
        caption(engine, pixels(1), max_new_tokens=200)


# -- sampling ----------------------------------------------------------------------------

def test_sampling_is_reproducible_with_a_seed(engine):
    px = pixels(2, seed=1)
    a = caption(engine, px, do_sample=True, seed=7, num_return=4, max_new_tokens=10)
    b = caption(engine, px, do_sample=True, seed=7, num_return=4, max_new_tokens=10)
    c = caption(engine, px, do_sample=True, seed=8, num_return=4, max_new_tokens=10)
    def tokens(caps):
        return [[x.tokens for x in per_image] for per_image in caps]
    assert tokens(a) == tokens(b)
    assert tokens(a) != tokens(c)
    assert all(len(per_image) == 4 for per_image in a)
    assert len({tuple(x.tokens) for x in a[0]}) > 1  # four draws, not one copied


def test_sampling_does_not_depend_on_batch_neighbours(engine):
    px = pixels(3, seed=2)
    together = caption(engine, px, do_sample=True, seed=3, max_new_tokens=8)
    alone = caption(engine, px[1:2], do_sample=True, seed=3, max_new_tokens=8)
    assert together[1][0].tokens == alone[0][0].tokens


def test_top_k_one_is_greedy(engine):
    px = pixels(3, seed=3)
    greedy = caption(engine, px, max_new_tokens=10)
    sampled = caption(engine, px, do_sample=True, top_k=1, seed=0, max_new_tokens=10)
    assert [c[0].tokens for c in greedy] == [c[0].tokens for c in sampled]


# -- length and penalties ----------------------------------------------------------------

def test_min_new_tokens_holds_back_eos(engine):
    px = pixels(4, seed=4)
    free = caption(engine, px, max_new_tokens=12)
    held = caption(engine, px, max_new_tokens=12, min_new_tokens=6)
    assert min(len(c[0].tokens) for c in free) < 6  # the guard: without it some end earlier
    assert all(len(c[0].tokens) >= 6 for c in held)


def test_strong_repetition_penalty_avoids_repeats(engine):
    px = pixels(3, seed=5)
    plain = caption(engine, px, max_new_tokens=12, min_new_tokens=12)
    penalised = caption(engine, px, max_new_tokens=12, min_new_tokens=12, repetition_penalty=1e4)
    assert any(len(set(c[0].tokens)) < len(c[0].tokens) for c in plain)  # repeats happen without it
    bos = engine.tokenizer.dec_id
    for c in penalised:
        assert len(set(c[0].tokens)) == len(c[0].tokens) and bos not in c[0].tokens


def test_beam_scores_are_length_penalised_logprobs(engine):
    px = pixels(3, seed=6)
    for lp in (0.0, 1.0, 2.0):
        caps = caption(engine, px, num_beams=3, num_return=3, length_penalty=lp, max_new_tokens=10)
        hyps = generate(engine.caption_decoder, groups_for(engine, px, [""] * 3, GenerationParams(
            num_beams=3, num_return=3, length_penalty=lp, max_new_tokens=10)))
        for per_image, caps_i in zip(hyps, caps):
            scores = [h.score for h in per_image]
            assert scores == sorted(scores, reverse=True)
            for h in per_image:
                n = len(h.tokens) + (1 if h.finished else 0)  # EOS counts in the length
                assert h.score == pytest.approx(h.logprob / n ** lp, abs=1e-4)
            assert [c.tokens for c in caps_i] == [h.tokens for h in per_image]


def test_beam_logprob_matches_teacher_forcing(engine):
    px = pixels(2, seed=7)
    caps = caption(engine, px, num_beams=3, max_new_tokens=8)
    states = engine.encode_images(px)
    for i, cap in enumerate(caps):
        seq = [engine.tokenizer.dec_id] + cap[0].tokens
        ended = len(cap[0].tokens) < 8
        seq = seq + [SEP_ID] if ended else seq
        ids = torch.tensor([seq])
        logits = engine.model.text_decoder(ids, torch.ones_like(ids), states[i:i + 1])
        lp = logits.log_softmax(-1)[0, :-1].gather(1, ids[0, 1:, None]).sum().item()
        assert cap[0].logprob == pytest.approx(lp, abs=1e-4)


# -- batching ----------------------------------------------------------------------------

@pytest.mark.parametrize("params", [dict(), dict(num_beams=3), dict(num_beams=2, repetition_penalty=1.5)])
def test_batched_with_different_prompts_equals_one_by_one(engine, params):
    px = pixels(4, seed=8)
    prompts = ["", "a picture of", "the red", "two small blue circles on"]
    batched = caption(engine, px, prompts, max_new_tokens=9, **params)
    for i, p in enumerate(prompts):
        alone = caption(engine, px[i:i + 1], p, max_new_tokens=9, **params)
        assert batched[i][0].tokens == alone[0][0].tokens
        assert batched[i][0].logprob == pytest.approx(alone[0][0].logprob, abs=1e-4)


@pytest.mark.parametrize("cross", ["cached", "absorbed"])
def test_continuous_admission_equals_static(engine, cross):
    """Groups that join a running batch midway decode as they would alone."""
    px = pixels(4, seed=9)
    params = [GenerationParams(max_new_tokens=10), GenerationParams(max_new_tokens=10, num_beams=3),
              GenerationParams(max_new_tokens=6, do_sample=True, seed=1, num_return=2),
              GenerationParams(max_new_tokens=10, num_beams=2)]
    states = engine.encode_images(px)

    def fresh():
        return [make_group([engine.tokenizer.dec_id], p, states[i], states.shape[1]) for i, p in enumerate(params)]

    alone = [generate(engine.caption_decoder, [g])[0] for g in fresh()]
    loop = DecodeLoop(BlipDecoderGraph(engine.model.text_decoder, SEP_ID, cross))
    staggered = fresh()
    with torch.inference_mode():
        for step in range(200):
            if step < len(staggered):
                loop.add(staggered[step])  # one newcomer per step
            if not loop.busy:
                break
            loop.step()
    for a, g in zip(alone, staggered):
        assert [h.tokens for h in g.results] == [h.tokens for h in a]


def test_cancelled_group_leaves_others_untouched(engine):
    px = pixels(3, seed=10)
    states = engine.encode_images(px)
    p = GenerationParams(max_new_tokens=10, min_new_tokens=10, num_beams=2)
    def mk(i):
        return make_group([engine.tokenizer.dec_id], p, states[i], states.shape[1])
    alone = [generate(engine.caption_decoder, [mk(i)])[0] for i in range(3)]
    loop = DecodeLoop(engine.caption_decoder)
    groups = [mk(i) for i in range(3)]
    for g in groups:
        loop.add(g)
    with torch.inference_mode():
        loop.step()
        loop.step()
        assert loop.drop(groups[1])
        while loop.busy:
            loop.step()
    assert groups[1].results == []
    assert [h.tokens for h in groups[0].results] == [h.tokens for h in alone[0]]
    assert [h.tokens for h in groups[2].results] == [h.tokens for h in alone[2]]
    assert loop.batch.rows == 0 and loop.batch.sources == 0


def test_greedy_logprob_is_finite_and_negative(engine):
    caps = caption(engine, pixels(2, seed=11), max_new_tokens=5)
    assert all(math.isfinite(c[0].logprob) and c[0].logprob < 0 for c in caps)
