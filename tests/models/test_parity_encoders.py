"""Vision states, ITC similarities and ITM probabilities against transformers (fp32, CPU)."""

import pytest
import torch

from vlserve.families.blip.engine import BlipEngine, EngineOptions

ATOL = 1e-4
TEXTS = ["a picture of the cat", "red dog", "two small blue circles on the left of a square"]


@pytest.fixture(params=["eager", "sdpa"])
def backend(request):
    return request.param


def engine(folder, backend):
    return BlipEngine(folder, EngineOptions(attention=backend))


def test_vision_states(tiny, backend):
    eng = engine(tiny.folders["caption"], backend)
    px = tiny.pixels(3)
    with torch.no_grad():
        ref = tiny.hf["caption"].vision_model(pixel_values=px).last_hidden_state
    ours = eng.encode_images(px)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_itc_similarity(tiny, backend):
    eng = engine(tiny.folders["retrieval"], backend)
    px = tiny.pixels(2, seed=1)
    ids, mask = eng.tokenizer.encode_batch(TEXTS)
    hf = tiny.hf["retrieval"]
    with torch.no_grad():
        # transformers scores one text row per image row; build the full matrix column by column
        ref = torch.stack([hf(input_ids=ids[j:j + 1].expand(2, -1), attention_mask=mask[j:j + 1].expand(2, -1),
                              pixel_values=px, use_itm_head=False).itm_score[:, 0] for j in range(len(TEXTS))], 1)
    ours = eng.image_embeddings(eng.encode_images(px)) @ eng.text_embeddings(TEXTS).T
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)
    assert ref.std() > 1e-3  # the comparison is not between constants


def test_itm_probability(tiny, backend):
    eng = engine(tiny.folders["retrieval"], backend)
    assert eng.fusion_first_token == "[CLS]"  # HF layout: follow transformers' classes
    px = tiny.pixels(3, seed=2)
    ids, mask = eng.tokenizer.encode_batch(TEXTS)
    with torch.no_grad():
        ref = tiny.hf["retrieval"](input_ids=ids, attention_mask=mask, pixel_values=px,
                                   use_itm_head=True).itm_score.softmax(-1)[:, 1]
    ours = eng.match(eng.encode_images(px), TEXTS)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_union_folder_matches_each_layout(tiny):
    """The union checkpoint serves every task with the same numbers as the single layouts."""
    eng = engine(tiny.folders["union"], "sdpa")
    assert set(eng.capabilities.tasks) == {"caption", "embed", "score", "rank", "vqa", "capfilt"}
    assert set(eng.graphs) == {"vision", "text", "fusion", "decoder"}
    px = tiny.pixels(2, seed=3)
    ids, mask = eng.tokenizer.encode_batch(TEXTS[:2])
    with torch.no_grad():
        ref = tiny.hf["retrieval"](input_ids=ids, attention_mask=mask, pixel_values=px).itm_score.softmax(-1)[:, 1]
    torch.testing.assert_close(eng.match(eng.encode_images(px), TEXTS[:2]), ref, atol=ATOL, rtol=0)
