"""blip-toy with int8 linear layers against its float32 self, on held-out scenes: the
thresholds precision = "int8" is held to (issue 18: greedy caption agreement >= 99%).

Torch int8 (models/int8.py) for every graph, the default int8 set (the decoder), and ONNX
Runtime int8 for the vision encoder."""

import pytest
import torch

from tests.helpers.blip_toy import MODEL, held_out_world, needs_weights
from vlserve import Pipeline
from vlserve.families.blip.engine import BlipEngine, EngineOptions
from vlserve.repository.spec import INT8_TORCH_GRAPHS

N = 200
ALL = ("vision", "text", "fusion", "decoder")

pytestmark = needs_weights


@pytest.fixture(scope="module")
def world():
    return held_out_world(N, seed=11)


@pytest.fixture(scope="module")
def fp32():
    return Pipeline(BlipEngine(MODEL))


def agreement(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def captions(pipe: Pipeline, images) -> list[str]:
    return [c[0].text for c in pipe.caption(images)]


@pytest.mark.parametrize("graphs", [INT8_TORCH_GRAPHS, ALL])
def test_greedy_captions_agree_with_float32(fp32, world, graphs):
    _, images = world
    int8 = Pipeline(BlipEngine(MODEL, EngineOptions(int8_graphs=graphs)))
    assert {g: int8.engine.runtime(g) for g in graphs} == {g: "torch-int8" for g in graphs}
    assert agreement(captions(int8, images), captions(fp32, images)) >= 0.99


def test_answers_scores_and_embeddings_drift_little(fp32, world):
    scenes, images = world
    int8 = Pipeline(BlipEngine(MODEL, EngineOptions(int8_graphs=ALL)))
    qa = [(images[i], q.question) for i, (_, qas) in enumerate(scenes[:60]) for q in qas]
    imgs, questions = [im for im, _ in qa], [q for _, q in qa]
    assert agreement([a.text for a in int8.vqa(imgs, questions)], [a.text for a in fp32.vqa(imgs, questions)]) >= 0.99
    texts = [s.caption for s, _ in scenes[:40]]
    cos = torch.nn.functional.cosine_similarity(int8.embed_texts(texts), fp32.embed_texts(texts))
    assert (1 - cos).max() < 1e-2
    got, want = int8.score(images[:40], texts, heads=["itc", "itm"]), fp32.score(images[:40], texts,
                                                                                  heads=["itc", "itm"])
    assert (got["itc"] - want["itc"]).abs().max() < 0.05
    assert ((got["itm"] > 0.5) == (want["itm"] > 0.5)).float().mean() >= 0.99  # the same match decisions


def test_onnx_runtime_int8_vision(fp32, world, tmp_path):
    pytest.importorskip("onnxruntime")
    _, images = world
    engine = BlipEngine(MODEL, EngineOptions(onnx_graphs=("vision",), onnx_dir=str(tmp_path),
                                             int8_graphs=("vision", "decoder")))
    assert engine.runtime("vision") == "onnx-int8" and engine.runtime("decoder") == "torch-int8"
    assert [p.name for p in tmp_path.glob("*-int8.onnx")] == ["vision-float32-int8.onnx"]
    assert agreement(captions(Pipeline(engine), images), captions(fp32, images)) >= 0.99
