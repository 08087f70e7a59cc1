"""The shipped coca-toy on held-out shapes-world scenes, through vlserve's normal path (seed 7;
training draws seeds >= 1,000,000). Each test scores a batch against a threshold."""

import tomllib

import pytest

from tests.helpers.toys import REPO, held_out_world, needs
from vlserve import load_model
from vlserve.shapes import swap_colors

MODEL = REPO / "coca-toy"
N = 48

pytestmark = needs("coca-toy")


@pytest.fixture(scope="module")
def toy():
    return load_model(MODEL)


@pytest.fixture(scope="module")
def world():
    return held_out_world(N, seed=7)


def test_folder_is_open_clips_layout_and_serves_what_coca_can(toy):
    assert set(toy.tasks) == {"caption", "embed", "score", "rank"}
    toml = tomllib.loads((MODEL / "model.toml").read_text())
    assert toml["name"] == "coca-toy" and toml["family"] == "coca"
    assert (MODEL / "open_clip_config.json").is_file()
    assert (MODEL / "open_clip_model.safetensors").stat().st_size < 40_000_000


def test_captions_match_the_canonical_caption(toy, world):
    scenes, images = world
    got = [c[0].text for c in toy.caption(images, max_new_tokens=16)]
    hits = [g == s.caption for g, (s, _) in zip(got, scenes)]
    two = [h for h, (s, _) in zip(hits, scenes) if len(s.objects) == 2]
    assert sum(hits) / N >= 0.8, list(zip(got, [s.caption for s, _ in scenes]))
    assert len(two) >= 15 and sum(two) / len(two) >= 0.7


def test_retrieval_ranks_the_true_caption_first(toy, world):
    scenes, images = world
    captions = sorted({s.caption for s, _ in scenes})
    sim = toy.embed_images(images) @ toy.embed_texts(captions).T
    best = [captions[j] for j in sim.argmax(dim=1).tolist()]
    assert sum(b == s.caption for b, (s, _) in zip(best, scenes)) / N >= 0.8
    pairs = [(images[i], s) for i, (s, _) in enumerate(scenes) if len(s.objects) == 2]
    wins = sum(bool(s[0, 0] > s[0, 1]) for s in (
        toy.score([im], [sc.caption, swap_colors(sc)])["itc"] for im, sc in pairs))
    assert wins / len(pairs) >= 0.8
