"""The shipped beit3-toy on held-out shapes-world scenes, through vlserve's normal path (seed 7;
training draws seeds >= 1,000,000): one backbone's retrieval, VQA classifier and captioner.
Each test scores a batch against a threshold. unilm's classes load it: tests/parity/."""

import tomllib

import pytest

from tests.helpers.toys import REPO, held_out_world, needs
from vlserve import load_model
from vlserve.shapes import ANSWERS, QUESTION_TYPES

MODEL = REPO / "beit3-toy"
N = 48

pytestmark = needs("beit3-toy")


@pytest.fixture(scope="module")
def toy():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def world():
    return held_out_world(N, seed=7)


def test_folder_is_unilms_layout_and_serves_every_beit3_task(toy):
    assert set(toy.tasks) == {"caption", "embed", "score", "rank", "vqa"}
    assert toy.capabilities.vqa_modes == ("classify",) and toy.capabilities.answers == ANSWERS
    toml = tomllib.loads((MODEL / "model.toml").read_text())
    assert toml["name"] == "beit3-toy" and toml["family"] == "beit3"
    assert {p.name for p in MODEL.iterdir()} >= {"beit3.pth", "beit3.spm", "answer2label.txt"}
    assert (MODEL / "beit3.pth").stat().st_size < 12_000_000


def test_captions_match_the_canonical_caption(toy, world):
    scenes, images = world
    got = [c[0].text for c in toy.caption(images, max_new_tokens=16)]
    hits = [g == s.caption for g, (s, _) in zip(got, scenes)]
    two = [h for h, (s, _) in zip(hits, scenes) if len(s.objects) == 2]
    assert sum(hits) / N >= 0.8, list(zip(got, [s.caption for s, _ in scenes]))
    assert len(two) >= 15 and sum(two) / len(two) >= 0.7


def test_vqa_by_the_classifier(toy, world):
    scenes, images = world
    qa = [(images[i], q) for i, (_, qas) in enumerate(scenes) for q in qas]
    answers = toy.vqa([im for im, _ in qa], [q.question for _, q in qa], top_k=3)
    ok = {t: [a.text == q.answer for a, (_, q) in zip(answers, qa) if q.type == t] for t in QUESTION_TYPES}
    assert sum(map(sum, ok.values())) / len(qa) >= 0.85
    assert all(sum(v) / len(v) >= 0.6 for v in ok.values()), {t: sum(v) / len(v) for t, v in ok.items()}
    assert all(len(a.ranked) == 3 and a.ranked[0].text == a.text for a in answers)


def test_retrieval_ranks_the_true_caption_first(toy, world):
    scenes, images = world
    captions = sorted({s.caption for s, _ in scenes})
    sim = toy.embed_images(images) @ toy.embed_texts(captions).T
    best = [captions[j] for j in sim.argmax(dim=1).tolist()]
    assert sum(b == s.caption for b, (s, _) in zip(best, scenes)) / N >= 0.8
