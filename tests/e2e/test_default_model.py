"""`vlserve serve` with no arguments serves the shipped blip-toy, and over HTTP it gets held-out
shapes-world scenes right: captions, retrieval and VQA, each scored over a batch against a
threshold (never one lucky example). Scenes come from seed 11; training draws seeds >= 1,000,000."""

import base64

import httpx
import pytest

from tests.e2e.server_process import ServerProcess
from tests.helpers.blip_toy import held_out_world, needs_weights
from tests.helpers.toys import needs

N = 24

pytestmark = needs_weights


@pytest.fixture(scope="module")
def world():
    scenes, pngs = held_out_world(N, seed=11)
    return [s for s, _ in scenes], [qas for _, qas in scenes], [base64.b64encode(p).decode() for p in pngs]


@pytest.fixture(scope="module")
def server():
    with ServerProcess() as srv:  # no --model-repo: the default repository
        yield srv


def post(server, route: str, body: dict) -> dict:
    r = httpx.post(server.url + route, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_default_repository_is_blip_toy(server):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
    toy = [m for m in models if m["name"] == "blip-toy"]
    assert toy and set(toy[0]["tasks"]) >= {"caption", "embed", "score", "rank", "vqa", "capfilt"}


def test_captions_over_http(server, world):
    scenes, _, images = world
    out = post(server, "/v1/caption", {"images": images})
    got = [c[0]["text"] for c in out["captions"]]
    hits = sum(g == s.caption for g, s in zip(got, scenes))
    assert hits / N >= 0.75, list(zip(got, [s.caption for s in scenes]))


def test_retrieval_ranks_the_true_caption_first(server, world):
    scenes, _, images = world
    captions = sorted({s.caption for s in scenes})
    hits = 0
    for image, scene in zip(images[:12], scenes):
        out = post(server, "/v1/retrieval/rank", {"query_image": image, "candidate_texts": captions, "top_k": 1})
        hits += captions[out["results"][0]["index"]] == scene.caption
    assert hits >= 10


def test_vqa_over_http(server, world):
    _, qas, images = world
    pairs = [(images[i], q) for i in range(12) for q in qas[i]]
    out = post(server, "/v1/vqa", {"images": [im for im, _ in pairs], "questions": [q.question for _, q in pairs]})
    hits = sum(a["text"] == q.answer for a, (_, q) in zip(out["answers"], pairs))
    assert hits / len(pairs) >= 0.8, [(a["text"], q.question, q.answer) for a, (_, q) in zip(out["answers"], pairs)]


@needs("coca-toy")
def test_coca_toy_over_http(server, world):
    scenes, _, images = world
    models = {m["name"]: m for m in httpx.get(server.url + "/v1/models", timeout=10).json()["models"]}
    assert models["coca-toy"]["state"] == "ready" and models["coca-toy"]["family"] == "coca"
    out = post(server, "/v1/caption", {"model": "coca-toy", "images": images})
    hits = sum(c[0]["text"] == s.caption for c, s in zip(out["captions"], scenes))
    assert hits / N >= 0.75, [(c[0]["text"], s.caption) for c, s in zip(out["captions"], scenes)]
    captions = sorted({s.caption for s in scenes})
    hits = sum(captions[post(server, "/v1/retrieval/rank", {"model": "coca-toy", "query_image": image,
                                                            "candidate_texts": captions, "top_k": 1}
                             )["results"][0]["index"]] == scene.caption for image, scene in zip(images[:12], scenes))
    assert hits >= 10


@needs("beit3-toy")
def test_beit3_toy_over_http(server, world):
    scenes, qas, images = world
    models = {m["name"]: m for m in httpx.get(server.url + "/v1/models", timeout=10).json()["models"]}
    toy = models["beit3-toy"]
    assert toy["state"] == "ready" and toy["family"] == "beit3" and toy["capabilities"]["vqa_modes"] == ["classify"]
    out = post(server, "/v1/caption", {"model": "beit3-toy", "images": images})
    hits = sum(c[0]["text"] == s.caption for c, s in zip(out["captions"], scenes))
    assert hits / N >= 0.75, [(c[0]["text"], s.caption) for c, s in zip(out["captions"], scenes)]
    pairs = [(images[i], q) for i in range(12) for q in qas[i]]
    out = post(server, "/v1/vqa", {"model": "beit3-toy", "images": [im for im, _ in pairs],
                                   "questions": [q.question for _, q in pairs], "top_k": 2})
    hits = sum(a["text"] == q.answer for a, (_, q) in zip(out["answers"], pairs))
    assert hits / len(pairs) >= 0.8, [(a["text"], q.question, q.answer) for a, (_, q) in zip(out["answers"], pairs)]
    assert all(len(a["ranked"]) == 2 for a in out["answers"])
    captions = sorted({s.caption for s in scenes})
    hits = sum(captions[post(server, "/v1/retrieval/rank", {"model": "beit3-toy", "query_image": image,
                                                            "candidate_texts": captions, "top_k": 1}
                             )["results"][0]["index"]] == scene.caption for image, scene in zip(images[:12], scenes))
    assert hits >= 10
