"""The shipped beit3-toy on held-out shapes-world scenes, through vlserve's normal path (seed 7;
training draws seeds >= 1,000,000): one backbone's retrieval, VQA classifier and captioner.
Each test scores a batch against a threshold. unilm's classes load it: tests/parity/."""

import tomllib

from tests.helpers.toys import (REPO, check_answers, check_captions, check_int8_agreement, check_itc_retrieval, needs,
                                toy_fixtures)
from vlserve.shapes import ANSWERS

MODEL = REPO / "beit3-toy"
N = 48

pytestmark = needs("beit3-toy")

toy, world = toy_fixtures(MODEL, N)


def test_folder_is_unilms_layout_and_serves_every_beit3_task(toy):
    assert set(toy.tasks) == {"caption", "embed", "score", "rank", "vqa"}
    assert toy.capabilities.vqa_modes == ("classify",) and toy.capabilities.answers == ANSWERS
    toml = tomllib.loads((MODEL / "model.toml").read_text())
    assert toml["name"] == "beit3-toy" and toml["family"] == "beit3"
    assert {p.name for p in MODEL.iterdir()} >= {"beit3.pth", "beit3.spm", "answer2label.txt"}
    assert (MODEL / "beit3.pth").stat().st_size < 12_000_000


def test_captions_match_the_canonical_caption(toy, world):
    check_captions(toy, world, max_new_tokens=16)


def test_vqa_by_the_classifier(toy, world):
    scenes, images = world
    qa = [(images[i], q) for i, (_, qas) in enumerate(scenes) for q in qas]
    answers = toy.vqa([im for im, _ in qa], [q.question for _, q in qa], top_k=3)
    check_answers(answers, qa)
    assert all(len(a.ranked) == 3 and a.ranked[0].text == a.text for a in answers)


def test_retrieval_ranks_the_true_caption_first(toy, world):
    check_itc_retrieval(toy, world)


def test_int8_agrees_with_float32(toy, world):
    check_int8_agreement(MODEL, toy, world, max_new_tokens=16)
