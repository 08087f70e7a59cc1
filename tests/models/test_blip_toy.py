"""The shipped blip-toy model on held-out shapes-world scenes, through vlserve's normal path.

Scenes come from seed 7 (training draws seeds >= 1,000,000) and travel as PNG bytes, as a
client's images do. Each test scores a batch against a threshold, never one example.
"""

import tomllib

import pytest
import torch

from tests.helpers.blip_toy import MODEL, needs_weights
from tests.helpers.toys import check_answers, check_captions, check_itc_retrieval, toy_fixtures
from vlserve.shapes import ANSWERS, swap_colors

N = 48

pytestmark = needs_weights

toy, world = toy_fixtures(MODEL, N)


def test_folder_serves_every_task_from_one_checkpoint(toy):
    assert set(toy.tasks) == {"caption", "embed", "score", "rank", "vqa", "capfilt"}
    toml = tomllib.loads((MODEL / "model.toml").read_text())
    assert toml["name"] == "blip-toy" and toml["family"] == "blip"
    assert sorted(toml["vqa"]["answers"]) == sorted(ANSWERS)
    assert (MODEL / "model.safetensors").stat().st_size < 8_000_000


def test_captions_match_the_canonical_caption(toy, world):
    check_captions(toy, world, max_new_tokens=24, num_beams=1)


def test_vqa_generated_and_ranked_answers(toy, world):
    scenes, images = world
    qa = [(images[i], q) for i, (_, qas) in enumerate(scenes) for q in qas]
    imgs, questions = [im for im, _ in qa], [q.question for _, q in qa]
    generated = toy.vqa(imgs, questions, max_new_tokens=3)
    ranked = toy.vqa(imgs, questions, candidates=list(ANSWERS))
    for answers in (generated, ranked):
        check_answers(answers, qa)


def test_retrieval_ranks_the_true_caption_first(toy, world):
    check_itc_retrieval(toy, world)
    scenes, images = world
    captions = sorted({s.caption for s, _ in scenes})
    reranked = [toy.rank(image=images[i], candidates=captions, k_itc=8, top_k=1)[0].index for i in range(16)]
    assert sum(captions[j] == scenes[i][0].caption for i, j in enumerate(reranked)) >= 13


def test_itm_prefers_the_true_caption_over_swapped_colours(toy, world):
    scenes, images = world
    pairs = [(images[i], s) for i, (s, _) in enumerate(scenes) if len(s.objects) == 2]
    wins = 0
    for image, scene in pairs:
        itm = toy.score([image], [scene.caption, swap_colors(scene)], heads=("itm",))["itm"][0]
        wins += bool(itm[0] > itm[1])
    assert wins / len(pairs) >= 0.85


def test_transformers_loads_it_and_captions_token_for_token(toy, world):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()  # the retrieval / VQA weights are unexpected keys to it
    hf = transformers.BlipForConditionalGeneration.from_pretrained(MODEL, dtype=torch.float32).eval()
    _, images = world
    images = images[:12]
    ours = [c[0].tokens for c in toy.caption(images, max_new_tokens=24)]
    pixels = toy.engine.pixels(images)  # our ImageProcessor
    with torch.no_grad():
        out = hf.generate(pixel_values=pixels, max_new_tokens=24).tolist()
    sep = hf.config.text_config.sep_token_id
    for row, tokens in zip(out, ours):
        assert row[0] == hf.config.text_config.bos_token_id
        gen = row[1:]
        gen = gen[: gen.index(sep)] if sep in gen else gen
        assert gen == tokens and len(tokens) >= 4
