"""Concurrency in-process: batches form across requests and change no answer; bounded
queues reject fast; deadlines expire queued work; every request gets exactly one answer."""

import asyncio

import pytest

from tests.api.conftest import Live, b64, png
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio


def images(n):
    return [b64(png(((37 * i) % 256, (91 * i) % 256, (53 * i) % 256), (30 + i, 40))) for i in range(n)]


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_concurrent_requests_batch_and_match_single_runs(repo):
    # the image cache off: the solo runs must encode again to be compared with the batched ones
    settings = Settings(model_repo=repo, max_queue_delay_ms=50, max_images=4, image_cache_bytes=0)
    async with Live(settings) as live:
        imgs = images(6)
        bodies = [{"model": "toy", "images": [im], "num_beams": 1 + i % 2} for i, im in enumerate(imgs)]
        together = await asyncio.gather(*(live.client.post("/v1/caption", json=b) for b in bodies))
        alone = [await live.client.post("/v1/caption", json=b) for b in bodies]
        assert all(r.status_code == 200 for r in together + alone)
        for a, b in zip(together, alone):
            ca, cb = a.json()["captions"][0][0], b.json()["captions"][0][0]
            assert (ca["tokens"], ca["text"]) == (cb["tokens"], cb["text"])
            assert ca["logprob"] == pytest.approx(cb["logprob"], abs=1e-4)
        text = (await live.client.get("/metrics")).text
        # six concurrent requests: the vision graph ran fewer than six batches for them
        batches = metric(text, "vlserve_batch_size_count", model="toy", graph="vision")
        examples = metric(text, "vlserve_batch_size_sum", model="toy", graph="vision")
        assert examples == 12 and batches < 12


async def test_texts_batch_across_requests(repo):
    async with Live(Settings(model_repo=repo, max_queue_delay_ms=50)) as live:
        texts = [["red dog"], ["a cat", "blue"], ["two small blue circles on the left"], ["yes"]]
        together = await asyncio.gather(*(live.client.post("/v1/embeddings", json={"model": "toy", "texts": t})
                                          for t in texts))
        alone = [await live.client.post("/v1/embeddings", json={"model": "toy", "texts": t}) for t in texts]
        for a, b in zip(together, alone):
            for x, y in zip(a.json()["text_embeddings"], b.json()["text_embeddings"]):
                assert max(abs(p - q) for p, q in zip(x, y)) < 1e-5
        text = (await live.client.get("/metrics")).text
        assert metric(text, "vlserve_batch_size_count", model="toy", graph="text") < 8


async def test_overload_rejects_fast_and_counts_balance(repo):
    settings = Settings(model_repo=repo, max_queue_size=2, max_batch_size=1, max_queue_delay_ms=0)
    async with Live(settings) as live:
        body = {"model": "toy", "images": images(1), "max_new_tokens": 8, "min_new_tokens": 8, "num_beams": 4}
        responses = await asyncio.gather(*(live.client.post("/v1/caption", json=body) for _ in range(40)))
        codes = [r.status_code for r in responses]
        assert len(codes) == 40 and set(codes) <= {200, 503}
        assert codes.count(503) > 0 and codes.count(200) > 0
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] and r.json()["error"]["type"] == "queue_full"
        text = (await live.client.get("/metrics")).text
        accepted = metric(text, "vlserve_requests_accepted_total", model="toy", task="caption")
        outcomes = {o: metric(text, "vlserve_requests_total", model="toy", task="caption", outcome=o)
                    for o in ("succeeded", "failed", "cancelled", "expired", "rejected")}
        assert accepted == outcomes["succeeded"] + outcomes["failed"] + outcomes["cancelled"] + outcomes["expired"]
        assert outcomes["succeeded"] == codes.count(200)
        assert outcomes["rejected"] + outcomes["failed"] == codes.count(503)
        worker = live.gateway.repository.models["toy"].worker
        assert worker.pending == 0


async def test_queued_work_past_its_deadline_gets_504(repo):
    async with Live(Settings(model_repo=repo, max_batch_size=1, max_queue_delay_ms=0)) as live:
        slow = {"model": "toy", "images": images(1), "max_new_tokens": 40, "min_new_tokens": 40, "num_beams": 8}
        quick = {"model": "toy", "images": images(1), "timeout_s": 0.01}
        responses = await asyncio.gather(*(live.client.post("/v1/caption", json=slow) for _ in range(3)),
                                         live.client.post("/v1/caption", json=quick))
        assert [r.status_code for r in responses[:3]] == [200] * 3
        assert responses[3].status_code == 504
        assert responses[3].json()["error"]["type"] == "deadline_exceeded"
        text = (await live.client.get("/metrics")).text
        assert metric(text, "vlserve_requests_total", model="toy", task="caption", outcome="expired") == 1


async def test_cancelled_request_frees_its_work(repo):
    """A request whose handler is cancelled (the client left) leaves nothing behind."""
    async with Live(Settings(model_repo=repo)) as live:
        body = {"model": "toy", "images": images(1), "max_new_tokens": 40, "min_new_tokens": 40, "num_beams": 8}
        task = asyncio.create_task(live.client.post("/v1/caption", json=body))
        worker = live.gateway.repository.models["toy"].worker
        for _ in range(200):
            await asyncio.sleep(0.01)
            if worker.decoders.running:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(200):
            if worker.pending == 0 and not worker.decoders.busy:
                break
            await asyncio.sleep(0.01)
        assert worker.pending == 0 and not worker.decoders.busy
        r = await live.client.post("/v1/caption", json={"model": "toy", "images": images(1)})
        assert r.status_code == 200
