"""The shipped coca-toy on held-out shapes-world scenes, through vlserve's normal path (seed 7;
training draws seeds >= 1,000,000). Each test scores a batch against a threshold."""

import tomllib

from tests.helpers.toys import REPO, check_captions, check_int8_agreement, check_itc_retrieval, needs, toy_fixtures
from vlserve.shapes import swap_colors

MODEL = REPO / "coca-toy"
N = 48

pytestmark = needs("coca-toy")

toy, world = toy_fixtures(MODEL, N)


def test_folder_is_open_clips_layout_and_serves_what_coca_can(toy):
    assert set(toy.tasks) == {"caption", "embed", "score", "rank"}
    toml = tomllib.loads((MODEL / "model.toml").read_text())
    assert toml["name"] == "coca-toy" and toml["family"] == "coca"
    assert (MODEL / "open_clip_config.json").is_file()
    assert (MODEL / "open_clip_model.safetensors").stat().st_size < 40_000_000


def test_captions_match_the_canonical_caption(toy, world):
    check_captions(toy, world, max_new_tokens=16)


def test_retrieval_ranks_the_true_caption_first(toy, world):
    check_itc_retrieval(toy, world)
    scenes, images = world
    pairs = [(images[i], s) for i, (s, _) in enumerate(scenes) if len(s.objects) == 2]
    wins = sum(bool(s[0, 0] > s[0, 1]) for s in (
        toy.score([im], [sc.caption, swap_colors(sc)])["itc"] for im, sc in pairs))
    assert wins / len(pairs) >= 0.8


def test_int8_agrees_with_float32(toy, world):
    check_int8_agreement(MODEL, toy, world, max_new_tokens=16)
