"""Task compositions: embeddings, scores, ITC shortlist + ITM re-rank, VQA, the Python API."""

import asyncio

import pytest
import torch

from tests.helpers.own_blip import make_folder
from vlserve import load_model
from vlserve.engine.generation.params import GenerationParams
from vlserve.errors import InvalidInputError, UnsupportedTaskError
from tests.helpers.tasks import task_model
from vlserve.tasks.capfilt import capfilt
from vlserve.tasks.retrieval import embed, rank, score
from vlserve.tasks.vqa import vqa

TEXTS = ["red dog", "a picture of the cat", "two small blue circles", "yes", "green square on the left"]


def run(coro):
    return asyncio.run(coro)


def pixels(n, seed=0):
    return torch.randn((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed))


def test_score_heads(engine):
    r = task_model(engine)
    px = pixels(2)
    out = run(score(r, px, TEXTS, heads=["itc", "itm"]))
    assert out["itc"].shape == (2, 5) and out["itm"].shape == (2, 5)
    assert out["itc"].abs().max() <= 1 + 1e-6
    states = engine.encode_images(px)
    direct = engine.match(states[1:2].expand(5, -1, -1), TEXTS)
    torch.testing.assert_close(out["itm"][1], direct, atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError):
        run(score(r, px, TEXTS, heads=["nope"]))


def test_embeddings_are_normalised(engine):
    img, txt = run(embed(task_model(engine), pixels(3), TEXTS))
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(5))


def test_rank_texts_shortlists_by_itc_then_reranks_by_itm(engine):
    r = task_model(engine)
    px = pixels(1, seed=1)
    itc = run(score(r, px, TEXTS, heads=["itc"]))["itc"][0]
    shortlist = set(torch.topk(itc, 3).indices.tolist())
    ranked = run(rank(r, query_pixels=px, candidate_texts=TEXTS, k_itc=3, top_k=2))
    assert len(ranked) == 2
    assert {x.index for x in ranked} <= shortlist
    assert ranked[0].itm >= ranked[1].itm
    plain = run(rank(r, query_pixels=px, candidate_texts=TEXTS, k_itc=5, top_k=5, rerank=False))
    assert [x.index for x in plain] == torch.argsort(itc, descending=True).tolist()
    assert all(x.itm is None for x in plain)


def test_rank_images_for_a_text(engine):
    r = task_model(engine)
    px = pixels(4, seed=2)
    ranked = run(rank(r, query_text="red dog", candidate_pixels=px, k_itc=4, top_k=4))
    probs = engine.match(engine.encode_images(px), ["red dog"] * 4)
    assert [x.index for x in ranked] == torch.argsort(probs, descending=True).tolist()


def test_rank_needs_exactly_one_query(engine):
    with pytest.raises(InvalidInputError):
        run(rank(task_model(engine), candidate_texts=TEXTS))


def test_vqa_padding_does_not_change_answers(engine):
    r = task_model(engine)
    px = pixels(3, seed=3)
    questions = ["what color is the dog", "how many", "is there a red square on the left"]
    params = GenerationParams(max_new_tokens=5, num_beams=2)
    batched = run(vqa(r, px, questions, params=params))
    for i, q in enumerate(questions):
        alone = run(vqa(r, px[i:i + 1], [q], params=params))
        assert alone[0].tokens == batched[i].tokens


def test_vqa_candidate_ranking(engine):
    r = task_model(engine)
    px = pixels(2, seed=4)
    cands = ["red", "blue", "two", "yes"]
    answers = run(vqa(r, px, ["what color is it", "is there a dog"], params=GenerationParams(),
                                 candidates=cands))
    for i, a in enumerate(answers):
        assert sum(x.prob for x in a.ranked) == pytest.approx(1.0)
        assert a.text == a.ranked[0].text
        # the winner's log-likelihood, recomputed by hand with teacher forcing
        states = engine.encode_images(px[i:i + 1])
        q = engine.question_sources(states, [["what color is it", "is there a dog"][i]])[0]
        ids = torch.tensor([[engine.tokenizer.dec_id] + a.tokens + [engine.tokenizer.sep_id]])
        logits = engine.model.text_decoder(ids, torch.ones_like(ids), q.states[None, : q.length])
        ll = logits.log_softmax(-1)[0, :-1].gather(1, ids[0, 1:, None]).sum().item()
        assert a.logprob == pytest.approx(ll, abs=1e-4)


def test_vqa_needs_one_question_per_image(engine):
    with pytest.raises(InvalidInputError, match="one per image"):
        run(vqa(task_model(engine), pixels(2), ["q"], params=GenerationParams()))


def test_python_api(tmp_path):
    from PIL import Image

    folder = make_folder(tmp_path / "m")
    model = load_model(folder, attention="eager")
    path = tmp_path / "x.png"
    Image.new("RGB", (50, 30), (250, 0, 0)).save(path)
    caps = model.caption([path, path.read_bytes()], max_new_tokens=5, num_beams=2, num_captions=2)
    assert len(caps) == 2 and len(caps[0]) == 2 and caps[0][0].tokens == caps[1][0].tokens
    assert model.score([path], TEXTS[:2])["itm"].shape == (1, 2)
    assert model.vqa([path], ["what color"], candidates=["red", "blue"])[0].ranked
    with pytest.raises(TypeError, match="unknown generation option"):
        model.caption([path], beams=3)


def test_caption_only_checkpoint_refuses_other_tasks(tiny_caption_engine):
    with pytest.raises(UnsupportedTaskError, match="serves: caption"):
        run(score(task_model(tiny_caption_engine), pixels(1), ["x"], heads=["itm"]))


def test_capfilt_scores_web_and_synthetic_captions(engine):
    r = task_model(engine)
    px = pixels(2, seed=5)
    web = [["red dog", "a cat"], []]
    params = GenerationParams(do_sample=True, seed=1, max_new_tokens=6)
    out = run(capfilt(r, px, web, params=params, num_synthetic=2, threshold=0.5))
    assert [c.source for c in out[0]][:2] == ["web", "web"]
    assert sum(c.source == "synthetic" for c in out[0]) <= 2 and any(c.source == "synthetic" for c in out[1])
    # the verdicts are the filter's ITM probabilities, thresholded
    states = engine.encode_images(px)
    itm = engine.match(states[:1].expand(2, -1, -1), web[0])
    for c, p in zip(out[0][:2], itm.tolist()):
        assert c.itm == pytest.approx(p, abs=1e-5) and c.kept == (p >= 0.5)
    only_web = run(capfilt(r, px, web, params=params, num_synthetic=0))
    assert [[c.text for c in per] for per in only_web] == [web[0], []]
