"""BEiT-3 with attention backend `triton` (the interpreter on the CPU) against the same
checkpoint on sdpa: the caption decoder's image prefix goes through decode_attention's
shared-prefix segment, beams included."""

import asyncio
import dataclasses
import os

import pytest
import torch

pytest.importorskip("triton")
pytest.importorskip("sentencepiece")

from tests.helpers.tasks import task_model  # noqa: E402
from tests.helpers.tiny_beit3 import TINY, make_beit3_folder  # noqa: E402
from vlserve.engine.family import EngineOptions  # noqa: E402
from vlserve.engine.generation.params import GenerationParams  # noqa: E402
from vlserve.families.beit3.engine import Beit3Engine, Beit3Options  # noqa: E402
from vlserve.tasks.caption import caption  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
CFG = dataclasses.replace(TINY, width=64, heads=4, ffn=96)  # head dim 16: the kernels' own path


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    folder = make_beit3_folder(tmp_path_factory.mktemp("beit3-triton"), seed=3, cfg=CFG)
    opts = Beit3Options(heads=CFG.heads)
    triton = Beit3Engine(folder, EngineOptions(device=DEVICE, attention="triton"), opts)
    assert triton.backend.name == "triton"
    return triton, Beit3Engine(folder, EngineOptions(attention="sdpa"), opts)


def pixels(n, seed=0):
    return torch.randn((n, 3, CFG.image_size, CFG.image_size), generator=torch.Generator().manual_seed(seed))


def test_embeddings_and_vqa(engines):
    tri, ref = engines
    px, texts = pixels(2), ["a red circle", "two squares"]
    torch.testing.assert_close(tri.image_embeddings(tri.encode_images(px.to(DEVICE))).cpu(),
                               ref.image_embeddings(ref.encode_images(px)), atol=1e-4, rtol=0)
    torch.testing.assert_close(tri.text_embeddings(texts).cpu(), ref.text_embeddings(texts), atol=1e-4, rtol=0)
    torch.testing.assert_close(tri.classify(tri.encode_images(px.to(DEVICE)), texts).cpu(),
                               ref.classify(ref.encode_images(px), texts), atol=1e-4, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_captions_equal_sdpas(engines, num_beams):
    tri, ref = engines
    px = pixels(3, seed=1)
    params = GenerationParams(max_new_tokens=6, num_beams=num_beams)
    got = asyncio.run(caption(task_model(tri), px.to(DEVICE), params=params))
    want = asyncio.run(caption(task_model(ref), px, params=params))
    assert [c[0].tokens for c in got] == [c[0].tokens for c in want]
    assert any(c[0].tokens for c in want)  # not a comparison of empty captions
    for g, w in zip(got, want):
        assert abs(g[0].logprob - w[0].logprob) < 1e-3
