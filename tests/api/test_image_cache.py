"""The image cache through the HTTP app: tasks on the same image run the vision graph once,
and answer exactly as without the cache (issue 18)."""

import asyncio

import pytest

from tests.api.conftest import Live, b64, png
from tests.api.test_batching import metric
from tests.helpers.own_blip import make_folder
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
IMAGE = b64(png((200, 30, 30)))


async def one_image_session(live) -> list:
    """Caption, VQA (generated and ranked), score and CapFilt, one after another, on IMAGE."""
    calls = [("/v1/caption", {"images": [IMAGE]}, "captions"),
             ("/v1/vqa", {"images": [IMAGE], "questions": ["what color"]}, "answers"),
             ("/v1/vqa", {"images": [IMAGE], "questions": ["what color"], "rank_answers": True}, "answers"),
             ("/v1/retrieval/score", {"images": [IMAGE], "texts": ["red dog", "a cat"], "heads": ["itc", "itm"]},
              ("itc", "itm")),
             ("/v1/capfilt", {"images": [IMAGE], "texts": [["red dog"]], "num_synthetic": 1, "seed": 3}, "results")]
    out = []
    for path, body, fields in calls:
        r = await live.client.post(path, json={"model": "toy", **body})
        assert r.status_code == 200, r.text
        out.append([r.json()[f] for f in ((fields,) if isinstance(fields, str) else fields)])
    return out


def vision_runs(text: str) -> float:
    return metric(text, "vlserve_batch_size_sum", model="toy", graph="vision")


async def test_every_task_on_one_image_encodes_it_once_and_answers_as_without_the_cache(repo):
    async with Live(Settings(model_repo=repo)) as live:
        cached = await one_image_session(live)
        text = (await live.client.get("/metrics")).text
        details = {m["name"]: m["details"] for m in (await live.client.get("/v1/models")).json()["models"]}
    assert vision_runs(text) == 1
    assert metric(text, "vlserve_image_cache_misses_total", model="toy") == 1
    assert metric(text, "vlserve_image_cache_hits_total", model="toy") == 4
    assert metric(text, "vlserve_image_cache_entries", model="toy") == 1
    stored = metric(text, "vlserve_image_cache_bytes", model="toy")
    assert stored > 0
    assert details["toy"]["image_cache"] == {"budget_bytes": Settings().image_cache_bytes, "bytes": stored,
                                             "entries": 1}

    async with Live(Settings(model_repo=repo, image_cache_bytes=0)) as live:
        uncached = await one_image_session(live)
        text = (await live.client.get("/metrics")).text
    assert vision_runs(text) == 5
    assert metric(text, "vlserve_image_cache_misses_total", model="toy") == 0
    assert cached == uncached  # exactly: the same states reach every task


async def test_concurrent_requests_for_a_new_image_encode_it_once(repo):
    async with Live(Settings(model_repo=repo, max_queue_delay_ms=0)) as live:
        image = b64(png((10, 20, 250), (33, 21)))
        bodies = [{"model": "toy", "images": [image]}, {"model": "toy", "images": [image], "texts": ["blue"]},
                  {"model": "toy", "images": [image, b64(png((1, 250, 1)))]}]
        out = await asyncio.gather(*(live.client.post("/v1/embeddings", json=b) for b in bodies))
        assert [r.status_code for r in out] == [200] * 3
        first = [r.json()["image_embeddings"][0] for r in out]
        # the same states; the embedding head may batch them with other rows (last-bit differences)
        assert first[1] == pytest.approx(first[0], abs=1e-6) and first[2] == pytest.approx(first[0], abs=1e-6)
        assert vision_runs((await live.client.get("/metrics")).text) == 2  # two distinct images


async def test_model_toml_sets_a_models_own_budget(tmp_path):
    make_folder(tmp_path / "toy")
    (tmp_path / "toy" / "model.toml").write_text("image_cache_bytes = 0\n")
    async with Live(Settings(model_repo=tmp_path)) as live:
        for _ in range(2):
            r = await live.client.post("/v1/embeddings", json={"images": [IMAGE]})
            assert r.status_code == 200
        text = (await live.client.get("/metrics")).text
        (model,) = (await live.client.get("/v1/models")).json()["models"]
    assert vision_runs(text) == 2 and model["details"]["image_cache"]["budget_bytes"] == 0
