"""precision int8 on CoCa and BEiT-3 (tiny random models): what runs in int8, and how far it
moves the outputs. The trained toys' agreement thresholds: tests/models/test_*_toy.py."""

import torch

from tests.helpers.tiny_beit3 import make_beit3_folder
from tests.helpers.tiny_coca import make_coca_folder
from vlserve import load_model
from vlserve.shapes.evaluation import world_images

TEXTS = ["a small red circle", "a large blue square left of a small green triangle"]


def drift(a: torch.Tensor, b: torch.Tensor) -> float:
    return (1 - torch.nn.functional.cosine_similarity(a.float(), b.float())).max().item()


def check(folder, graphs: dict[str, str]):
    fp32, int8 = load_model(folder), load_model(folder, precision="int8")
    assert {g: int8.engine.runtime(g) for g in graphs} == graphs
    _, images = world_images(6, 5)
    assert drift(int8.embed_images(images), fp32.embed_images(images)) < 1e-2
    assert drift(int8.embed_texts(TEXTS), fp32.embed_texts(TEXTS)) < 1e-2
    # random weights: greedy captions may part at near-tied logits, so only that it decodes here;
    # agreement is held on the trained toys
    assert len(int8.caption(images, max_new_tokens=6)) == len(images)
    return fp32, int8


def test_coca_int8_vision_text_and_decoder(tmp_path):
    check(make_coca_folder(tmp_path / "coca"), {"vision": "torch-int8", "text": "torch-int8",
                                                 "decoder": "torch-int8"})


def test_beit3_int8_is_its_whole_backbone(tmp_path):
    fp32, int8 = check(make_beit3_folder(tmp_path / "beit3"), {g: "torch-int8" for g in ("vision", "text", "fusion",
                                                                                           "decoder")})
    images, questions = world_images(4, 5)[1], ["what color is the circle?"] * 4
    got, want = (m.vqa(images, questions, mode="classify") for m in (int8, fp32))
    for g, w in zip(got, want):
        probs = {r.text: r.prob for r in w.ranked}
        assert max(abs(r.prob - probs[r.text]) for r in g.ranked) < 0.05
