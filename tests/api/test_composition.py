"""Tasks across models and at scale (issue 11): CapFilt captions with one model and filters
with another; rank shortlists by one model's ITC and re-ranks by another's ITM; a request
far larger than a batch runs as bounded batches; independent graphs run concurrently."""

import asyncio
import base64
import json

import pytest
from safetensors.torch import load_file, save_file

from tests.api.conftest import Live, b64, png
from tests.api.test_faults import total
from tests.helpers.own_blip import make_folder, tiny_config
from tests.helpers.tasks import task_model
from vlserve.families.blip.engine import BlipEngine
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio


def keep(folder, prefixes, architectures):
    """Cut a union folder down to the parts a public checkpoint holds."""
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith(prefixes)}, folder / "model.safetensors")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(cfg | {"architectures": architectures}))
    return folder


@pytest.fixture(scope="module")
def split_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    keep(make_folder(root / "captioner", seed=11), ("vision_model.", "text_decoder."),
         ["BlipForConditionalGeneration"])
    keep(make_folder(root / "matcher", seed=12), ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.",
                                                  "itm_head."), ["BlipForImageTextRetrieval"])
    keep(make_folder(root / "itc-only", seed=13), ("vision_model.", "text_encoder.", "vision_proj.", "text_proj."),
         ["BlipForImageTextRetrieval"])
    return root


@pytest.fixture
async def split_live(split_repo):
    async with Live(Settings(model_repo=split_repo)) as live:
        yield live


def images(n):
    return [b64(png(((40 * i) % 256, (70 * i) % 256, 90), (30 + i, 40))) for i in range(n)]


async def test_capfilt_captions_with_one_model_and_filters_with_another(split_live, split_repo):
    imgs = images(2)
    body = {"images": imgs, "texts": [["red dog", "a cat"], ["blue"]], "num_synthetic": 2, "seed": 3,
            "max_new_tokens": 6, "captioner": "captioner", "filter": "matcher"}
    r = await split_live.client.post("/v1/capfilt", json=body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    matcher = task_model(BlipEngine(split_repo / "matcher"))
    for i, per in enumerate(results):
        texts = [c["text"] for c in per]
        assert texts[: len(body["texts"][i])] == body["texts"][i] and any(c["source"] == "synthetic" for c in per)
        pixels = matcher.engine.pixels([base64.b64decode(imgs[i])])
        direct = matcher.engine.match(matcher.engine.encode_images(pixels).expand(len(texts), -1, -1), texts)
        assert [c["itm"] for c in per] == pytest.approx(direct.tolist(), abs=1e-5)  # the filter's own ITM
    # the captioner alone cannot filter, the matcher alone cannot caption: both are needed
    r = await split_live.client.post("/v1/capfilt", json={"images": imgs, "model": "captioner"})
    assert r.status_code == 400 and "does not serve 'capfilt'" in r.json()["error"]["message"]
    r = await split_live.client.post("/v1/capfilt", json={"images": imgs, "captioner": "captioner",
                                                          "filter": "captioner"})
    assert r.status_code == 400
    r = await split_live.client.post("/v1/capfilt", json={"images": imgs, "captioner": "matcher", "filter": "matcher",
                                                          "model": "captioner"})
    assert r.status_code == 400 and "does not serve 'capfilt'" in r.json()["error"]["message"]


async def test_rank_shortlists_by_itc_and_reranks_by_another_models_itm(split_live):
    texts = ["red dog", "a cat", "two blue circles", "yes", "green square"]
    base = {"query_image": images(1)[0], "candidate_texts": texts, "k_itc": 3, "top_k": 3, "model": "itc-only"}
    alone = (await split_live.client.post("/v1/retrieval/rank", json=base)).json()["results"]
    assert all(x["itm"] is None for x in alone)  # no match head: ITC order, no 400
    r = await split_live.client.post("/v1/retrieval/rank", json=base | {"reranker": "matcher"})
    assert r.status_code == 200, r.text
    reranked = r.json()["results"]
    assert {x["index"] for x in reranked} == {x["index"] for x in alone}  # the same ITC shortlist
    assert [x["itm"] for x in reranked] == sorted((x["itm"] for x in reranked), reverse=True)
    r = await split_live.client.post("/v1/retrieval/rank", json=base | {"rerank": True})
    assert r.status_code == 400 and "itm" in r.json()["error"]["message"]
    text = (await split_live.client.get("/metrics")).text
    assert total(text, "vlserve_requests_total", task="rank", status="200") == 2  # counted as rank


async def test_a_request_far_above_max_batch_size_runs_in_bounded_batches(repo, monkeypatch):
    async with Live(Settings(model_repo=repo, max_batch_size=8, max_images=8, max_texts=40)) as live:
        engine = live.gateway.repository.models["toy"].engine
        seen, real = [], engine.match

        def watched(states, texts):
            seen.append(states.shape[0])
            return real(states, texts)

        monkeypatch.setattr(engine, "match", watched)
        texts = [f"text {i}" for i in range(40)]
        r = await live.client.post("/v1/retrieval/score", json={"model": "toy", "images": images(8), "texts": texts,
                                                                "heads": ["itm"]})
        assert r.status_code == 200 and len(r.json()["itm"]) == 8 and len(r.json()["itm"][0]) == 40
        assert sum(seen) == 320 and max(seen) <= 8  # 320 pairs, never more than a batch at once
        metrics = (await live.client.get("/metrics")).text
        assert total(metrics, "vlserve_batch_size_sum", model="toy", graph="match") == 320
        assert total(metrics, "vlserve_batch_size_count", model="toy", graph="match") >= 40


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_a_huge_score_request_does_not_materialise_its_pairs(tmp_path, monkeypatch):
    """32 images x 256 texts with ITM: 8,192 pairs of (145, 128) image states would be 600 MB
    as one fusion batch; in pieces of max_batch_size the pairs never exist together."""
    make_folder(tmp_path / "wide", config=tiny_config(width=128, image=96))
    async with Live(Settings(model_repo=tmp_path, max_images=32, max_texts=256, max_batch_size=32)) as live:
        peak, stop = [rss_kib()], asyncio.Event()

        async def sample():
            while not stop.is_set():
                peak.append(rss_kib())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        texts = [f"red dog {i % 7}" for i in range(256)]
        r = await live.client.post("/v1/retrieval/score", json={"images": images(32), "texts": texts,
                                                                "heads": ["itc", "itm"]})
        stop.set()
        await sampler
        assert r.status_code == 200 and len(r.json()["itm"][0]) == 256
        assert (max(peak) - peak[0]) / 1024 < 250  # MiB; one batch of pairs is ~2.4 MB


async def test_independent_graphs_are_queued_together(live, monkeypatch):
    worker = live.gateway.repository.models["toy"].worker
    real, queued = worker.submit, []

    def recording(op, inputs, size, deadline):
        item = real(op, inputs, size, deadline)
        queued.append((op, [name for name, q in worker.queues.items() if q.items]))
        return item

    monkeypatch.setattr(worker, "submit", recording)
    with worker.cond:  # hold the worker: whatever the request queues meanwhile is queued together
        task = asyncio.create_task(live.client.post("/v1/embeddings", json={"model": "toy", "images": images(1),
                                                                             "texts": ["a red dog"]}))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(queued) == 2:
                break
    r = await task
    assert r.status_code == 200
    assert sorted(op for op, _ in queued[:2]) == ["text", "vision"]
    assert set(queued[1][1]) == {"text", "vision"}  # the second was queued while the first waited
