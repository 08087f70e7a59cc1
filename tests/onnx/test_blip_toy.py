"""The shipped blip-toy on ONNX Runtime against its torch runtime, on held-out shapes-world scenes.

Exports go to a temporary folder (the shipped folder is not written). Tolerances: ITC
embeddings and ITM probabilities within 1e-4 absolute; greedy captions and VQA answers
identical for every scene (a trained model's margins dwarf the ~1e-6 state differences).
"""

import pytest
import torch

from tests.helpers.blip_toy import MODEL, held_out_world, needs_weights
from vlserve import Pipeline
from vlserve.families.blip.engine import BlipEngine, EngineOptions

N = 16

pytestmark = needs_weights


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("blip-toy-onnx")
    onnx = BlipEngine(MODEL, EngineOptions(onnx_graphs=("vision", "text", "fusion"), onnx_dir=str(out)))
    return Pipeline(onnx), Pipeline(BlipEngine(MODEL))


@pytest.fixture(scope="module")
def world():
    return held_out_world(N, seed=7)


def test_embeddings_and_itm(toy, world):
    onnx, ref = toy
    scenes, images = world
    captions = [s.caption for s, _ in scenes]
    torch.testing.assert_close(onnx.embed_images(images), ref.embed_images(images), atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx.embed_texts(captions), ref.embed_texts(captions), atol=1e-4, rtol=0)
    got, want = onnx.score(images[:4], captions[:4]), ref.score(images[:4], captions[:4])
    torch.testing.assert_close(got["itm"], want["itm"], atol=1e-4, rtol=0)


def test_captions_and_answers(toy, world):
    onnx, ref = toy
    scenes, images = world
    assert [c[0].text for c in onnx.caption(images)] == [c[0].text for c in ref.caption(images)]
    qa = [(images[i], q.question) for i, (_, qas) in enumerate(scenes) for q in qas][:24]
    imgs, questions = [im for im, _ in qa], [q for _, q in qa]
    assert [a.text for a in onnx.vqa(imgs, questions, max_new_tokens=3)] == \
        [a.text for a in ref.vqa(imgs, questions, max_new_tokens=3)]
