"""The gateway serves a `runtime = "onnx"` model for every task, with the answers of its torch twin."""

import shutil

import pytest
import torch

from tests.api.conftest import Live, b64, png
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
RED, BLUE = b64(png((220, 30, 30))), b64(png((30, 70, 220), (64, 64)))
TEXTS = ["red dog", "a cat", "blue"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def repo(pow2, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-repo")
    for name, runtime in (("onnx", 'runtime = "onnx"\n'), ("torch", "")):
        shutil.copytree(pow2.folder, root / name)  # keeps mtimes: onnx/ stays current, nothing re-exports
        (root / name / "model.toml").write_text(runtime + '[vqa]\nanswers = ["red", "blue", "yes"]\n')
    return root


@pytest.fixture
async def live(repo):
    async with Live(Settings(model_repo=repo, ort_intra_op_threads=1)) as live:
        yield live


async def both(live, path, body):
    out = []
    for model in ("onnx", "torch"):
        r = await live.client.post(path, json={"model": model, **body})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def close(a, b):
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=2e-5, rtol=0)


async def test_onnx_model_is_ready_with_every_task(live):
    models = {m["name"]: m for m in (await live.client.get("/v1/models")).json()["models"]}
    assert models["onnx"]["state"] == "ready", models["onnx"]["error"]
    assert models["onnx"]["tasks"] == models["torch"]["tasks"] and "capfilt" in models["onnx"]["tasks"]
    engine = live.gateway.repository.models["onnx"].engine
    assert {g: engine.runtime(g) for g in engine.graphs} == {"vision": "onnx", "text": "onnx", "fusion": "onnx",
                                                             "decoder": "torch"}


async def test_caption(live):
    onnx, ref = await both(live, "/v1/caption", {"images": [RED, BLUE], "num_beams": 2, "max_new_tokens": 6})
    assert [c[0]["tokens"] for c in onnx["captions"]] == [c[0]["tokens"] for c in ref["captions"]]


async def test_embeddings_score_and_rank(live):
    onnx, ref = await both(live, "/v1/embeddings", {"images": [RED], "texts": TEXTS})
    close(onnx["image_embeddings"], ref["image_embeddings"])
    close(onnx["text_embeddings"], ref["text_embeddings"])
    onnx, ref = await both(live, "/v1/retrieval/score", {"images": [RED, BLUE], "texts": TEXTS,
                                                         "heads": ["itc", "itm"]})
    close(onnx["itc"], ref["itc"])
    close(onnx["itm"], ref["itm"])
    onnx, ref = await both(live, "/v1/retrieval/rank", {"query_image": RED, "candidate_texts": TEXTS + ["yes"],
                                                        "k_itc": 3, "top_k": 2})
    assert [x["index"] for x in onnx["results"]] == [x["index"] for x in ref["results"]]


async def test_vqa(live):
    onnx, ref = await both(live, "/v1/vqa", {"images": [RED, BLUE], "questions": ["what color", "how many"]})
    assert [a["tokens"] for a in onnx["answers"]] == [a["tokens"] for a in ref["answers"]]
    onnx, ref = await both(live, "/v1/vqa", {"images": [RED], "questions": ["what color"], "rank_answers": True})
    close([x["prob"] for x in onnx["answers"][0]["ranked"]], [x["prob"] for x in ref["answers"][0]["ranked"]])


async def test_capfilt(live):
    onnx, ref = await both(live, "/v1/capfilt", {"images": [RED], "texts": [TEXTS[:2]], "num_synthetic": 2,
                                                 "threshold": 0.3, "seed": 1})
    (got,), (want,) = onnx["results"], ref["results"]
    assert [(c["text"], c["kept"]) for c in got] == [(c["text"], c["kept"]) for c in want]
    close([c["itm"] for c in got], [c["itm"] for c in want])
