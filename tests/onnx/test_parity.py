"""ONNX Runtime encoder graphs against the torch runtime of the same folder (float32, CPU).

Tolerances: embeddings, ITM probabilities and question states within 2e-5 absolute (the
graphs differ only in kernel summation order, ~1e-6 here); captions and generated answers
token for token, since the torch decoder reads image states that differ by ~1e-6.
"""

import torch
from PIL import Image

from vlserve import Pipeline

ATOL = 2e-5
TEXTS = ["a red cat", "the dog is on the left of a blue square", "yes", "how many circles are there"]


def images(n=3, size=48):
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(size, size + 8 * i, 3, generator=g) * 255).byte().numpy())
            for i in range(n)]


def test_graphs_run_where_configured(pair):
    assert pair.onnx.onnx.providers == {g: "CPUExecutionProvider" for g in ("vision", "text", "fusion")}
    assert [pair.onnx.runtime(g) for g in pair.onnx.graphs] == ["onnx", "onnx", "onnx", "torch"]
    assert [pair.torch.runtime(g) for g in pair.torch.graphs] == ["torch"] * 4


def test_image_states_and_itc_embeddings(pair):
    pixels = pair.torch.pixels(images())
    states, ref = pair.onnx.encode_images(pixels), pair.torch.encode_images(pixels)
    assert states.shape == ref.shape and states.dtype == ref.dtype
    torch.testing.assert_close(states, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(pair.onnx.image_embeddings(states), pair.torch.image_embeddings(ref),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(pair.onnx.text_embeddings(TEXTS), pair.torch.text_embeddings(TEXTS),
                               atol=ATOL, rtol=0)


def test_single_row_batches(pair):
    """Batch 1 and text length 3 ([CLS] word [SEP]) were not the export's example shapes."""
    pixels = pair.torch.pixels(images(1))
    torch.testing.assert_close(pair.onnx.encode_images(pixels), pair.torch.encode_images(pixels),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(pair.onnx.text_embeddings(["yes"]), pair.torch.text_embeddings(["yes"]),
                               atol=ATOL, rtol=0)


def test_itm_probabilities_and_question_states(pair):
    states = pair.torch.encode_images(pair.torch.pixels(images(4)))  # the same states feed both
    probs, ref = pair.onnx.match(states, TEXTS), pair.torch.match(states, TEXTS)
    torch.testing.assert_close(probs, ref, atol=ATOL, rtol=0)
    assert probs.std() > 1e-3  # random weights still separate the pairs: the check has something to compare
    got, want = pair.onnx.question_sources(states, TEXTS), pair.torch.question_sources(states, TEXTS)
    assert [s.length for s in got] == [s.length for s in want]
    for g, w in zip(got, want):  # only the real positions are kept
        torch.testing.assert_close(g.states, w.states, atol=ATOL, rtol=0)


def test_captions_and_answers_match(pair):
    """Vision (and fusion for VQA) on ONNX Runtime, the decoder on torch."""
    imgs = images(3)
    onnx, ref = Pipeline(pair.onnx), Pipeline(pair.torch)
    for options in ({"max_new_tokens": 8}, {"max_new_tokens": 8, "num_beams": 3}):
        got, want = onnx.caption(imgs, **options), ref.caption(imgs, **options)
        assert [c[0].tokens for c in got] == [c[0].tokens for c in want]
    questions = ["what color", "how many", "what shape"]
    got, want = onnx.vqa(imgs, questions, max_new_tokens=4), ref.vqa(imgs, questions, max_new_tokens=4)
    assert [a.tokens for a in got] == [a.tokens for a in want]
    got = onnx.vqa(imgs[:1], ["what color"], candidates=["red", "blue", "yes"])[0]
    want = ref.vqa(imgs[:1], ["what color"], candidates=["red", "blue", "yes"])[0]
    assert [r.text for r in got.ranked] == [r.text for r in want.ranked]
