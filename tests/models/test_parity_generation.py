"""Decoder logits, greedy / beam-search token ids and VQA answers against transformers."""

import asyncio

import pytest
import torch

from tests.helpers.tiny_blip import SEP_ID
from vlserve.families.blip.engine import BlipEngine, BlipOptions, EngineOptions
from vlserve.engine.generation.params import GenerationParams
from tests.helpers.tasks import task_model
from vlserve.engine.generation.loop import generate, make_groups
from vlserve.tasks.caption import caption as caption_task
from vlserve.tasks.vqa import vqa as vqa_task

ATOL = 1e-4


def hf_tokens(row: list[int], prompt_len: int) -> list[int]:
    """transformers' output after the prompt, cut at the first EOS (padding follows it)."""
    gen = row[prompt_len:]
    return gen[: gen.index(SEP_ID)] if SEP_ID in gen else gen


@pytest.fixture(params=["cached", "absorbed"])
def cross(request):
    """Both ways of running the decoder's cross-attention (models/blip/cross.py)."""
    return request.param


def run_caption(eng, px, prompt, params):
    return asyncio.run(caption_task(task_model(eng), px, prompt=prompt, params=params))


def test_decoder_logits_teacher_forced(tiny):
    eng = BlipEngine(tiny.folders["caption"], EngineOptions(attention="sdpa"))
    px = tiny.pixels(2, seed=4)
    ids, mask = eng.tokenizer.encode_batch(["a picture of the cat", "red dog"])
    ids[:, 0] = eng.tokenizer.dec_id
    with torch.no_grad():
        ref = tiny.hf["caption"](pixel_values=px, input_ids=ids, attention_mask=mask).logits
    ours = eng.model.text_decoder(ids, mask, eng.encode_images(px))
    real = mask.bool()  # padded positions are not compared: transformers lets them attend padding
    torch.testing.assert_close(ours[real], ref[real], atol=ATOL, rtol=0)


SETTINGS = [
    dict(prompt="", max_new_tokens=15),
    dict(prompt="a picture of", max_new_tokens=10),
    dict(prompt="a picture of", max_new_tokens=12, repetition_penalty=1.3, min_new_tokens=4),
    dict(prompt="a picture of", max_new_tokens=10, num_beams=3),
    dict(prompt="", max_new_tokens=9, num_beams=4, length_penalty=0.6, min_new_tokens=2),
    dict(prompt="the", max_new_tokens=8, num_beams=2, length_penalty=2.0, repetition_penalty=1.2),
    dict(prompt="a", max_new_tokens=7, num_beams=3, num_return=3),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items() if k != "prompt"))
def test_generate_matches_transformers(tiny, setting, cross):
    setting = dict(setting)
    prompt = setting.pop("prompt")
    params = GenerationParams(**setting)
    eng = BlipEngine(tiny.folders["caption"], EngineOptions(attention="sdpa"), BlipOptions(cross_attention=cross))
    px = tiny.pixels(4, seed=5)
    ours = run_caption(eng, px, prompt, params)
    prompt_ids = eng.tokenizer.encode_prompt(prompt)
    hf_input = torch.tensor([prompt_ids + [SEP_ID]] * px.shape[0])  # generate() drops the last token
    with torch.no_grad():
        out = tiny.hf["caption"].generate(
            pixel_values=px, input_ids=hf_input, do_sample=False, num_beams=params.num_beams,
            max_new_tokens=params.max_new_tokens, min_new_tokens=params.min_new_tokens,
            length_penalty=params.length_penalty, repetition_penalty=params.repetition_penalty,
            num_return_sequences=params.num_return, return_dict_in_generate=True, output_scores=True,
            output_logits=True)
    rows = out.sequences.tolist()
    lengths = set()
    for i, caps in enumerate(ours):
        assert len(caps) == params.num_return
        for j, cap in enumerate(caps):
            expected = hf_tokens(rows[i * params.num_return + j], len(prompt_ids))
            assert cap.tokens == expected, f"image {i} caption {j}"
            lengths.add(len(cap.tokens))
            if params.num_beams > 1:
                assert cap.logprob <= 0
    if params.num_beams > 1:
        ours_scores = [
            # our Hypothesis.score is the length-penalised beam score transformers reports
            h.score for hyps in _hyps(eng, px, prompt_ids, params) for h in hyps]
        torch.testing.assert_close(torch.tensor(ours_scores), out.sequences_scores, atol=1e-4, rtol=0)
    else:
        steps = torch.stack(out.logits, 1).log_softmax(-1)  # (B, T, V) the model's log-probs
        for i, caps in enumerate(ours):
            gen = rows[i][len(prompt_ids):]
            k = len(caps[0].tokens)
            n = k + (1 if k < len(gen) and gen[k] == SEP_ID else 0)
            ref = sum(steps[i, t, gen[t]].item() for t in range(n))
            assert caps[0].logprob == pytest.approx(ref, abs=1e-4)


def _hyps(eng, px, prompt_ids, params):
    states = eng.encode_images(px)
    groups = make_groups(eng.caption_decoder, eng.caption_sources(states), [prompt_ids] * len(px), [params] * len(px))
    return generate(eng.caption_decoder, groups)


def test_generation_settings_produce_varied_lengths(tiny_pow2):
    """Guard for the parity tests above: sequences end by EOS at different steps."""
    eng = BlipEngine(tiny_pow2.folders["caption"], EngineOptions())
    caps = run_caption(eng, tiny_pow2.pixels(8, seed=5), "", GenerationParams(max_new_tokens=15))
    lengths = {len(c[0].tokens) for c in caps}
    assert len(lengths) >= 2 and min(lengths) < 15


QUESTIONS = ["what color is the cat", "how many dogs are there", "is there a red square"]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_vqa_answers_match_transformers(tiny, num_beams, cross):
    eng = BlipEngine(tiny.folders["vqa"], EngineOptions(attention="sdpa"), BlipOptions(cross_attention=cross))
    px = tiny.pixels(3, seed=6)
    params = GenerationParams(max_new_tokens=6, num_beams=num_beams)
    ours = asyncio.run(vqa_task(task_model(eng), px, QUESTIONS, params=params))
    for i, q in enumerate(QUESTIONS):
        ids, mask = eng.tokenizer.encode_batch([q])  # one at a time: transformers attends padding
        with torch.no_grad():
            out = tiny.hf["vqa"].generate(input_ids=ids, pixel_values=px[i:i + 1], attention_mask=mask,
                                          max_new_tokens=6, num_beams=num_beams, do_sample=False)
        assert ours[i].tokens == hf_tokens(out[0].tolist(), 1), q


def test_union_folder_captions_match_caption_layout(tiny):
    union = BlipEngine(tiny.folders["union"], EngineOptions())
    single = BlipEngine(tiny.folders["caption"], EngineOptions())
    px = tiny.pixels(3, seed=7)
    params = GenerationParams(max_new_tokens=8, num_beams=2)
    a = run_caption(union, px, "a", params)
    b = run_caption(single, px, "a", params)
    assert [c[0].tokens for c in a] == [c[0].tokens for c in b]
