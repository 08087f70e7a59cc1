"""vlserve's CoCa against open_clip 3.3 itself (CPU, fp32), on random models of several
shapes: embeddings, the decoder's logits, greedy and beam decoding, the tokenizer and the
eval preprocessing; and the shipped coca-toy as open_clip loads it."""

import asyncio
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transform import image_transform

from tests.helpers.tasks import task_model
from tests.parity.coca_reference import CONFIGS, EOT, SOT, build, decode_recomputing, greedy, save
from tests.parity.photos import photo_like
from vlserve.engine.generation.loop import generate, make_groups
from vlserve.engine.generation.params import GenerationParams
from vlserve.families.coca.engine import CocaEngine
from vlserve.families.coca.tokenizer import ClipTokenizer
from vlserve.tasks.caption import caption

ATOL = 1e-4
TEXTS = ["a photo of a cat", "two dogs running on the beach", "it's 3 o'clock!", "red", "naïve café über 42%"]
TOY = Path(__file__).resolve().parents[2] / "model_repo" / "coca-toy"


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    ref = build(request.param, seed=len(request.param))
    folder = save(ref, tmp_path_factory.mktemp("coca") / request.param)
    return ref, CocaEngine(folder, )


def pixels(ref, n, seed=0):
    size = ref.visual.image_size[0]
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


def ids_for(ref, texts):
    return open_clip.get_tokenizer("coca_ViT-B-32", context_length=ref.text.context_length)(texts)


def test_image_and_text_embeddings(pair):
    ref, eng = pair
    px = pixels(ref, 3, seed=1)
    with torch.no_grad():
        latent, tokens = ref._encode_image(px, normalize=False)
        want_img, want_txt = ref.encode_image(px), ref.encode_text(ids_for(ref, TEXTS))
    ours_latent, ours_tokens = eng.encode_images(px)
    torch.testing.assert_close(ours_latent, latent, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours_tokens, tokens, atol=ATOL, rtol=0)
    torch.testing.assert_close(eng.image_embeddings((ours_latent, ours_tokens)), want_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(eng.text_embeddings(TEXTS), want_txt, atol=ATOL, rtol=0)
    assert want_txt.std() > 1e-3 and tokens.std() > 1e-3  # the comparison is not between constants


def test_decoder_logits_including_the_shifted_pad_mask(pair):
    """Teacher-forced logits, with a pad id (0, '!') inside one text: the cls-mask quirk."""
    ref, eng = pair
    px = pixels(ref, 3, seed=2)
    ids = ids_for(ref, TEXTS[:2] + ["word " * 40])  # the last fills the context (open_clip truncates it)
    assert (ids[2] != 0).all()
    ids[1, 3] = 0
    with torch.no_grad():
        want = ref(px, ids, output_labels=False)["logits"]
        got = eng.model.teacher_forced(eng.encode_images(px)[1], ids)
        want_txt, got_txt = ref.encode_text(ids), torch.nn.functional.normalize(eng.model.text(ids), dim=-1)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_txt, want_txt, atol=ATOL, rtol=0)


def run_caption(eng, px, **params):
    out = asyncio.run(caption(task_model(eng), px, params=GenerationParams(**params)))
    return [[c.tokens for c in cs] for cs in out]


def test_greedy_equals_a_greedy_loop_over_open_clips_forward(pair):
    ref, eng = pair
    px = pixels(ref, 4, seed=3)
    steps = ref.text.context_length - 2
    want = greedy(ref, px, steps)
    got = run_caption(eng, px, max_new_tokens=steps)
    assert [c[0] for c in got] == want
    assert len({len(w) for w in want}) > 1 or any(len(w) < steps for w in want)  # some ended by <eot>


@pytest.mark.parametrize("options", [dict(num_beams=3), dict(num_beams=4, length_penalty=0.6),
                                     dict(num_beams=3, repetition_penalty=1.3, min_new_tokens=3)])
def test_beams_through_the_cache_equal_beams_over_open_clips_forward(pair, options):
    """open_clip's own generate("beam_search") ranks beams by summed raw logits, not
    log-probabilities (README), so the reference is vlserve's beam algorithm (transformers',
    checked against transformers' generate on BLIP) over open_clip's forward recomputed at
    every step: any difference is the KV cache's, beams forking and dying included."""
    ref, eng = pair
    px = pixels(ref, 3, seed=4)
    steps = ref.text.context_length - 2
    params = GenerationParams(max_new_tokens=steps, **options)
    want = decode_recomputing(ref, px, params, [SOT])
    got = run_caption(eng, px, max_new_tokens=steps, **options)
    assert [c[0] for c in got] == want


def test_a_pad_token_in_the_prompt_is_masked_as_open_clip_does(pair):
    """Token 0 (a non-final '!') is the pad id: after it the text tower's shifted mask drops
    a key, in the cached prefill and every later step as in open_clip's recomputation."""
    ref, eng = pair
    px = pixels(ref, 2, seed=5)
    prompt = [SOT, 736, 0, 1929]  # "red", then the pad id, then "dog"
    params = GenerationParams(max_new_tokens=ref.text.context_length - len(prompt) - 1)
    want = decode_recomputing(ref, px, params, prompt)
    graph = eng.caption_decoder
    groups = make_groups(graph, eng.caption_sources(eng.encode_images(px)), [prompt] * 2, [params] * 2)
    assert [r[0].tokens for r in generate(graph, groups)] == want


def test_tokenizer_matches_open_clips():
    ref = open_clip.get_tokenizer("coca_ViT-B-32")
    ours = ClipTokenizer(76)
    texts = TEXTS + ["A Small RED square, left of a large blue circle.", "&amp;lt;b&amp;gt; html  entities",
                     "emoji 🙂 and 中文 and العربية", "tabs\tand\nnewlines", "don't won't we've they'll I'm",
                     "3.14159 and 1,000,000", "a" * 200]
    assert torch.equal(ours.encode_batch(texts), ref(texts))
    for text in texts[:6]:
        assert ours.decode(ours.encode_prompt(text)[1:]) == ref.decode(ref([text])[0].tolist()).replace(
            "<start_of_text>", "").split("<end_of_text>")[0].strip()


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (333, 777), (224, 224), (225, 500), (640, 481)])
def test_preprocessing_equals_open_clips_eval_transform(size):
    img = photo_like(size)
    want = image_transform(224, is_train=False)(img)
    from vlserve.engine.images import CropProcessor

    got = CropProcessor(224)([img])[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.skipif(not (TOY / "open_clip_model.safetensors").is_file(), reason="coca-toy not trained yet")
def test_coca_toy_loads_in_open_clip_with_our_embeddings():
    ref = open_clip.create_model(f"local-dir:{TOY}").eval()
    eng = CocaEngine(TOY)
    px = torch.randn((3, 3, 128, 128), generator=torch.Generator().manual_seed(6))
    texts = ["a small red square", "a large blue circle above a small green triangle"]
    tok = open_clip.get_tokenizer("coca_ViT-B-32", context_length=ref.text.context_length)
    with torch.no_grad():
        want_img, want_txt = ref.encode_image(px), ref.encode_text(tok(texts))
    torch.testing.assert_close(eng.image_embeddings(eng.encode_images(px)), want_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(eng.text_embeddings(texts), want_txt, atol=ATOL, rtol=0)
    assert eng.tokenizer.eot_id == EOT
