"""The engine with attention backend `triton` (the interpreter on the CPU) against
transformers, on a tiny model whose head dims the kernels support (16 and 32)."""

import asyncio
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("triton")

from tests.helpers.tiny_blip import TinySpec  # noqa: E402
from tests.models.conftest import TinySet  # noqa: E402
from vlserve.families.blip.engine import BlipEngine, BlipOptions, EngineOptions  # noqa: E402
from vlserve.engine.generation.params import GenerationParams  # noqa: E402
from tests.helpers.tasks import task_model  # noqa: E402
from vlserve.tasks.caption import caption as caption_task  # noqa: E402

SPEC = TinySpec("kernel", vision_hidden=64, vision_heads=4, vision_layers=2, image_size=24, patch_size=8,
                text_hidden=64, text_heads=2, text_layers=2, intermediate=48)
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return TinySet(SPEC, tmp_path_factory.mktemp("kernel-tiny"))


def engine(tiny, kind, cross="cached"):
    eng = BlipEngine(tiny.folders[kind], EngineOptions(device=DEVICE, attention="triton"),
                     BlipOptions(cross_attention=cross))
    assert eng.backend.name == "triton"
    return eng


def test_vision_and_itm(tiny):
    eng = engine(tiny, "retrieval")
    px = tiny.pixels(2)
    texts = ["a picture of the cat", "red dog"]
    ids, mask = eng.tokenizer.encode_batch(texts)
    hf = tiny.hf["retrieval"]
    with torch.no_grad():
        ref_states = hf.vision_model(pixel_values=px).last_hidden_state
        ref_itm = hf(input_ids=ids, attention_mask=mask, pixel_values=px).itm_score.softmax(-1)[:, 1]
    states = eng.encode_images(px.to(DEVICE))
    torch.testing.assert_close(states.cpu(), ref_states, atol=1e-4, rtol=0)
    torch.testing.assert_close(eng.match(states, texts).cpu(), ref_itm, atol=1e-4, rtol=0)


@pytest.mark.parametrize("cross", ["cached", "absorbed"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_matches_transformers(tiny, cross, num_beams):
    eng = engine(tiny, "caption", cross)
    px = tiny.pixels(2, seed=1)
    params = GenerationParams(max_new_tokens=6, num_beams=num_beams)
    ours = asyncio.run(caption_task(task_model(eng), px.to(DEVICE), prompt="a picture of", params=params))
    prompt = eng.tokenizer.encode_prompt("a picture of")
    with torch.no_grad():
        out = tiny.hf["caption"].generate(pixel_values=px, input_ids=torch.tensor([prompt + [3]] * 2),
                                          max_new_tokens=6, num_beams=num_beams, do_sample=False)
    for cap, row in zip(ours, out.tolist()):
        gen = row[len(prompt):]
        assert cap[0].tokens == (gen[: gen.index(3)] if 3 in gen else gen)
