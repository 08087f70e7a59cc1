"""Cohere/Jina-style /v1/rerank and /rerank (issue 15): a text query over image documents and an
image query over text documents, relevance = ITM where the (re-ranking) model has it, ITC
otherwise, equal to /v1/retrieval/rank's scores; top_n, return_documents, vLLM's content form,
and what is refused."""

import asyncio

import pytest

from tests.api.conftest import Live, b64, png
from tests.api.test_openai_embeddings import data_uri
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
TEXTS = ["a red square", "a green circle", "two blue things"]

@pytest.fixture
def live(live3):
    return live3  # this module's tests run on the three families





async def rank_v1(live, **body):
    r = await live.client.post("/v1/retrieval/rank", json=body | {"top_k": 10, "k_itc": 10})
    assert r.status_code == 200, r.text
    return r.json()["results"]


async def rerank(live, path="/v1/rerank", status=200, **body):
    r = await live.client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


@pytest.mark.parametrize("model,head", [("blip", "itm"), ("coca", "itc"), ("beit3", "itc")])
async def test_text_query_over_images_equals_the_rank_route(live, model, head):
    out = await rerank(live, model=model, query=TEXTS[0], documents=[{"image": data_uri(c)} for c in COLORS])
    want = await rank_v1(live, model=model, query_text=TEXTS[0], candidate_images=[b64(png(c)) for c in COLORS])
    assert [r["index"] for r in out["results"]] == [r["index"] for r in want]
    for got, ref in zip(out["results"], want):
        assert abs(got["relevance_score"] - ref[head]) < 1e-6 and "document" not in got
    assert out["model"] == model and out["id"].startswith("rerank-") and out["usage"]["total_tokens"] > 0


async def test_image_query_over_texts_with_top_n_documents_and_the_short_path(live):
    query = {"type": "image_url", "image_url": {"url": data_uri(COLORS[1])}}
    out = await rerank(live, path="/rerank", model="blip", query=query, documents=TEXTS, top_n=2,
                       return_documents=True)
    want = await rank_v1(live, model="blip", query_image=b64(png(COLORS[1])), candidate_texts=TEXTS)
    assert [(r["index"], r["document"]["text"]) for r in out["results"]] == [(r["index"], TEXTS[r["index"]])
                                                                             for r in want[:2]]
    assert all(abs(a["relevance_score"] - b["itm"]) < 1e-6 for a, b in zip(out["results"], want))


async def test_coca_re_ranked_by_blips_itm_and_vllms_content_form(live):
    docs = {"content": [{"type": "image_url", "image_url": {"url": data_uri(c)}} for c in COLORS]}
    out = await rerank(live, model="coca", reranker="blip", query=TEXTS[2], documents=docs)
    want = await rank_v1(live, model="coca", reranker="blip", query_text=TEXTS[2],
                         candidate_images=[b64(png(c)) for c in COLORS])
    assert [(r["index"], round(r["relevance_score"], 6)) for r in out["results"]] == \
        [(r["index"], round(r["itm"], 6)) for r in want]


@pytest.mark.parametrize("body,param", [
    ({"query": "a", "documents": ["b", "c"]}, "documents[0]"),
    ({"query": {"image": "x"}, "documents": [{"image": "y"}]}, "documents[0]"),
    ({"query": "a", "documents": []}, "documents"),
    ({"query": [1, 2], "documents": ["b"]}, "query"),
    ({"query": "a", "documents": {"items": []}}, "documents"),
    ({"query": "a", "documents": [{"image": "data:image/png;base64,AAAA"}], "top_n": 0}, "top_n"),
])
async def test_refused_clearly(live, body, param):
    r = await live.client.post("/v1/rerank", json={"model": "blip"} | body)
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["param"] == param, r.json()


async def test_the_fronts_take_the_api_key_and_count_as_their_tasks(three):
    async with Live(Settings(model_repo=three, api_key="s3cret")) as live:
        key = {"Authorization": "Bearer s3cret"}
        bodies = {"/v1/rerank": {"model": "blip", "query": "a", "documents": ["b"]},
                  "/rerank": {"model": "blip", "query": "a", "documents": ["b"]},
                  "/v1/embeddings": {"model": "blip", "input": "a"}}
        for path, body in bodies.items():
            assert (await live.client.post(path, json=body)).status_code == 401, path
        ok = {"model": "blip", "query": "a", "documents": [{"image": data_uri(COLORS[0])}]}
        assert (await live.client.post("/rerank", json=ok, headers=key)).status_code == 200
        assert (await live.client.post("/v1/embeddings", json=bodies["/v1/embeddings"], headers=key)).status_code == 200
        metrics = (await live.client.get("/metrics", headers=key)).text
        for task in ("rank", "embed"):
            line = next(x for x in metrics.splitlines() if x.startswith("vlserve_requests_total")
                        and f'task="{task}"' in x and 'outcome="succeeded"' in x)
            assert float(line.rsplit(" ", 1)[1]) >= 1, line


async def test_concurrent_requests_through_every_front_share_batches(three):
    from tests.api.test_batching import metric

    # the image cache off: two fronts send the same image, and each is to reach the vision batches
    async with Live(Settings(model_repo=three, max_queue_delay_ms=100, image_cache_bytes=0)) as live:
        image = data_uri(COLORS[0])
        part = {"type": "image_url", "image_url": {"url": image}}
        calls = [("/v1/embeddings", {"model": "blip", "images": [b64(png(COLORS[1]))]}),
                 ("/v1/embeddings", {"model": "blip", "input": [{"image": image}]}),
                 ("/v1/rerank", {"model": "blip", "query": "a", "documents": [{"image": data_uri(COLORS[2])}]}),
                 ("/v1/chat/completions", {"model": "blip", "max_tokens": 3,
                                           "messages": [{"role": "user", "content": [part]}]})]
        out = await asyncio.gather(*(live.client.post(path, json=body) for path, body in calls))
        assert [r.status_code for r in out] == [200] * 4, [r.text for r in out]
        text = (await live.client.get("/metrics")).text
        batches = metric(text, "vlserve_batch_size_count", model="blip", graph="vision")
        examples = metric(text, "vlserve_batch_size_sum", model="blip", graph="vision")
        assert examples == 4 and batches < 4  # the four fronts' images went through shared vision batches
