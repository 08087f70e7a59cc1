"""Fault injection: one request's failure never reaches its neighbours, work of a client
that left stops at every stage, resources stay bounded, counters balance (issue 14:
items 1, 4, 10 and the fault-injection suite)."""

import asyncio
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.api.conftest import Live, b64, png
from tests.helpers.own_blip import make_folder
from vlserve.engine.images import CLIP_MEAN, CLIP_STD
from vlserve.engine.generation.groups import SampledGroup
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
MARK = 0.5  # the temperature that marks the request whose decode group is made to fail


def images(n, size=(30, 40)):
    return [b64(png(((37 * i) % 256, (91 * i) % 256, (53 * i) % 256), size)) for i in range(n)]


def samples(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in Prometheus text."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def total(text: str, name: str, **labels) -> float:
    return sum(v for k, v in samples(text, name).items() if all(f'{a}="{b}"' in k for a, b in labels.items()))


# -- item 1: a failing decode group fails only its own request ---------------------------

async def test_a_failing_decode_group_fails_only_its_request(live, monkeypatch):
    caption = {"model": "toy", "max_new_tokens": 8, "min_new_tokens": 8, "num_beams": 3}
    imgs = images(6)
    alone = [(await live.client.post("/v1/caption", json={**caption, "images": [im]})).json()["captions"]
             for im in imgs]
    real = SampledGroup.decision_rows

    def failing(self, offset):
        if self.params.temperature == MARK and self.generated == 2:
            raise RuntimeError("injected decode fault")
        return real(self, offset)

    monkeypatch.setattr(SampledGroup, "decision_rows", failing)
    bad = {"model": "toy", "images": imgs[:1], "do_sample": True, "temperature": MARK, "max_new_tokens": 8,
           "min_new_tokens": 8}
    responses = await asyncio.gather(*(live.client.post("/v1/caption", json={**caption, "images": [im]})
                                       for im in imgs), live.client.post("/v1/caption", json=bad))
    assert [r.status_code for r in responses] == [200] * 6 + [500]
    for r, solo in zip(responses, alone):  # batching may move a logprob in its last bits, never a token
        got = r.json()["captions"]
        assert [[c["tokens"] for c in cs] for cs in got] == [[c["tokens"] for c in cs] for cs in solo]
        assert [c["logprob"] for cs in got for c in cs] == pytest.approx(
            [c["logprob"] for cs in solo for c in cs], abs=1e-4)
    worker = live.gateway.repository.models["toy"].worker
    assert worker.pending == 0


async def test_a_vision_batch_failing_for_one_item_fails_only_that_request(repo, monkeypatch):
    async with Live(Settings(model_repo=repo, max_queue_delay_ms=300)) as live:
        engine = live.gateway.repository.models["toy"].engine
        real, batches = engine.encode_images, []
        marked = (1 / 255 - CLIP_MEAN[0]) / CLIP_STD[0]  # channel 0 of the solid colour (1, 2, 3)

        def failing(pixels):
            hit = bool(torch.isclose(pixels[:, 0, 0, 0], torch.tensor(marked), atol=1e-4).any())
            batches.append((pixels.shape[0], hit))
            if hit:
                raise RuntimeError("injected vision fault")
            return real(pixels)

        monkeypatch.setattr(engine, "encode_images", failing)
        good = [live.client.post("/v1/embeddings", json={"model": "toy", "images": [im]}) for im in images(4)]
        bad = live.client.post("/v1/embeddings", json={"model": "toy", "images": [b64(png((1, 2, 3)))]})
        responses = await asyncio.gather(*good, bad)
        assert [r.status_code for r in responses] == [200] * 4 + [500]
        assert any(n > 1 and hit for n, hit in batches), batches  # it shared a batch, then ran alone


# -- item 4: pixel budgets; a client that left stops its decoding ---------------------------

async def test_request_pixel_budget(repo):
    settings = Settings(model_repo=repo, max_pixels=4_000_000, max_request_pixels=6_000_000, max_images=4)
    async with Live(settings) as live:
        big = b64(png((10, 20, 30), (2000, 2000)))  # 4 M pixels, a few KB of PNG
        r = await live.client.post("/v1/embeddings", json={"model": "toy", "images": [big]})
        assert r.status_code == 200
        r = await live.client.post("/v1/embeddings", json={"model": "toy", "images": [big, big]})
        assert r.status_code == 413 and r.json()["error"]["type"] == "image_too_large"


async def test_server_decode_budget_is_never_exceeded(repo, monkeypatch):
    settings = Settings(model_repo=repo, max_pixels=1_000_000, max_decode_pixels=2_000_000, max_images=4,
                        preprocess_threads=4)
    async with Live(settings) as live:
        engine, budget = live.gateway.repository.models["toy"].engine, live.gateway.pixel_budget
        real, peak = engine.pixels, []

        def watched(blobs, names=None):
            peak.append(budget.used)
            return real(blobs, names)

        monkeypatch.setattr(engine, "pixels", watched)
        img = b64(png((10, 20, 30), (1000, 1000)))
        body = {"model": "toy", "images": [img] * 4}
        responses = await asyncio.gather(*(live.client.post("/v1/embeddings", json=body) for _ in range(3)))
        assert all(r.status_code == 200 for r in responses)
        assert len(peak) == 12 and max(peak) <= 2_000_000 and budget.used == 0


async def test_a_client_that_left_stops_decoding(repo, monkeypatch):
    async with Live(Settings(model_repo=repo, max_images=16, preprocess_threads=2)) as live:
        engine = live.gateway.repository.models["toy"].engine
        real, decoded = engine.pixels, []

        def slow(blobs, names=None):
            import time

            time.sleep(0.15)
            decoded.append(names)
            return real(blobs, names)

        monkeypatch.setattr(engine, "pixels", slow)
        task = asyncio.create_task(live.client.post("/v1/embeddings", json={"model": "toy", "images": images(16)}))
        await asyncio.sleep(0.4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.6)
        assert len(decoded) <= 8, decoded  # 2 threads: about 6 started before the cancel, none after
        assert live.gateway.pixel_budget.used == 0
        assert live.gateway.repository.models["toy"].worker.pending == 0


# -- item 10: metrics -----------------------------------------------------------------------

async def test_decoder_queue_depth_returns_to_zero(live):
    r = await live.client.post("/v1/caption", json={"model": "toy", "images": images(1), "num_beams": 5})
    assert r.status_code == 200
    text = (await live.client.get("/metrics")).text
    assert total(text, "vlserve_queue_depth", model="toy", graph="decoder") == 0


async def test_every_request_is_counted_once_whatever_answers_it(live, monkeypatch):
    sends = [
        live.client.post("/v1/embeddings", json={"model": "toy", "texts": ["a"]}),  # 200
        live.client.post("/v1/embeddings", content=b"[" * 10_000, headers={"content-type": "application/json"}),
        live.client.post("/v1/embeddings", json={"model": "toy", "texts": ["a"], "bogus": 1}),  # 422
        live.client.post("/v1/embeddings", content=b"x", headers={"content-type": "text/plain"}),  # 415
        live.client.post("/v1/nothing", json={}),  # 404
        live.client.post("/v1/caption", json={"model": "nope", "images": images(1)}),  # 404
    ]
    before = (await live.client.get("/metrics")).text
    responses = await asyncio.gather(*sends)
    engine = live.gateway.repository.models["toy"].engine
    monkeypatch.setattr(engine, "text_embeddings", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    responses.append(await live.client.post("/v1/embeddings", json={"model": "toy", "texts": ["a"]}))  # 500
    after = (await live.client.get("/metrics")).text
    codes = [r.status_code for r in responses]
    assert codes == [200, 400, 422, 415, 404, 404, 500]
    received = total(after, "vlserve_requests_received_total") - total(before, "vlserve_requests_received_total")
    answered = total(after, "vlserve_requests_total") - total(before, "vlserve_requests_total")
    assert received == answered == len(codes)
    for code in set(codes):
        n = total(after, "vlserve_requests_total", status=code) - total(before, "vlserve_requests_total", status=code)
        assert n == codes.count(code), code
    assert total(after, "vlserve_requests_total", task="embed", outcome="invalid") - total(
        before, "vlserve_requests_total", task="embed", outcome="invalid") == 3
    assert total(after, "vlserve_requests_in_flight") == 0  # scrapes and probes are not counted


# -- the worker thread dying ------------------------------------------------------------------

class WorkerDeath(BaseException):
    """Not an Exception: what the worker's own error handling cannot catch."""


async def test_a_dying_worker_answers_each_request_once_and_the_model_stays_failed(tmp_path, monkeypatch):
    make_folder(tmp_path / "solo")
    async with Live(Settings(model_repo=tmp_path)) as live:
        model = live.gateway.repository.models["solo"]

        def dying(pixels):
            raise WorkerDeath()

        caption = {"model": "solo", "max_new_tokens": 40, "min_new_tokens": 40, "num_beams": 8}
        decoding = asyncio.gather(*(live.client.post("/v1/caption", json={**caption, "images": [im]})
                                    for im in images(2)))
        for _ in range(300):
            await asyncio.sleep(0.01)
            if model.worker.decoders.running:
                break
        monkeypatch.setattr(model.engine, "encode_images", dying)
        fresh = images(3)[2:]  # not one of the cached images: its vision batch runs, and dies
        dead = await live.client.post("/v1/embeddings", json={"model": "solo", "images": fresh})
        responses = [dead] + list(await decoding)
        assert [r.status_code for r in responses] == [500] * 3  # each in-flight request: one answer
        assert all(r.json()["error"]["type"] == "model_failed" for r in responses)
        assert model.state == "failed" and "worker thread died" in model.error
        assert (await live.client.get("/health/ready")).status_code == 503
        r = await live.client.post("/v1/embeddings", json={"model": "solo", "texts": ["a"]})
        assert r.status_code == 500 and r.json()["error"]["type"] == "model_failed"
        assert (await live.client.get("/v1/models")).json()["models"][0]["state"] == "failed"


# -- corrupt weights at start ------------------------------------------------------------------

async def test_corrupt_weights_fail_that_model_only(tmp_path):
    make_folder(tmp_path / "good")
    nan = make_folder(tmp_path / "nan", seed=2)
    state = load_file(nan / "model.safetensors")
    state["vision_model.post_layernorm.weight"] = torch.full_like(state["vision_model.post_layernorm.weight"],
                                                                  float("nan"))
    save_file(state, str(nan / "model.safetensors"))
    cut = make_folder(tmp_path / "truncated", seed=3)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    async with Live(Settings(model_repo=tmp_path)) as live:
        models = {m["name"]: m for m in (await live.client.get("/v1/models")).json()["models"]}
        assert models["good"]["state"] == "ready"
        assert models["nan"]["state"] == "failed" and "not finite" in models["nan"]["error"]
        assert "post_layernorm" in models["nan"]["error"]
        assert models["truncated"]["state"] == "failed"
        assert str(tmp_path) not in json.dumps(models)
        r = await live.client.post("/v1/embeddings", json={"model": "good", "texts": ["a"]})
        assert r.status_code == 200
