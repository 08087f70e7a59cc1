"""The SDK against the real app in-process: every task parses to exactly what the server
sent, server errors arrive as the typed exceptions with the server's type and param, and
the API key travels when given."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from starlette.testclient import TestClient

import vlserve_client as vc
from tests.api.conftest import Live, b64
from tests.client.conftest import ANSWERS, BLUE, RED, sdk
from vlserve.api.app import create_app
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio


async def same(live: Live, parsed, path: str, body: dict):
    """The SDK's parsed answer holds every field the server sent, unchanged."""
    raw = await live.client.post(path, json=body)
    assert raw.status_code == 200, raw.text
    assert parsed.model_dump(exclude_none=True) == raw.json()


async def test_caption_and_vqa_match_the_raw_api(live, tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    async with sdk(live) as client:
        # a path, bytes, a file object and a PIL image are all the same pixels
        with open(path, "rb") as f:
            got = await client.caption([path, RED, f, Image.open(io.BytesIO(RED))], num_beams=2)
        assert len({tuple(c[0].tokens) for c in got.captions}) == 1
        await same(live, got, "/v1/caption", {"images": [b64(RED)] * 4, "num_beams": 2})
        assert got.usage.images == 4 and got.model == "toy"

        got = await client.vqa(BLUE, "what color", rank_answers=True)
        await same(live, got, "/v1/vqa", {"images": [b64(BLUE)], "questions": ["what color"], "rank_answers": True})
        assert {r.text for r in got.answers[0].ranked} == set(ANSWERS)
        best = [r.text for r in got.answers[0].ranked[:2]]
        got = await client.vqa(BLUE, "what color", rank_answers=True, top_k=2)
        await same(live, got, "/v1/vqa", {"images": [b64(BLUE)], "questions": ["what color"], "rank_answers": True,
                                          "top_k": 2})
        assert [r.text for r in got.answers[0].ranked] == best

        got = await client.vqa(BLUE, "what color", candidates=["red", "blue"], mode="rank")
        await same(live, got, "/v1/vqa", {"images": [b64(BLUE)], "questions": ["what color"],
                                          "candidates": ["red", "blue"], "mode": "rank"})
        assert {r.text for r in got.answers[0].ranked} == {"red", "blue"}


async def test_retrieval_matches_the_raw_api(live):
    texts = ["red dog", "a cat", "blue"]
    async with sdk(live) as client:
        got = await client.score([RED, BLUE], texts, heads=["itc", "itm"])
        await same(live, got, "/v1/retrieval/score", {"images": [b64(RED), b64(BLUE)], "texts": texts,
                                                      "heads": ["itc", "itm"]})
        assert len(got.itm) == 2 and len(got.itm[0]) == 3

        got = await client.embed(images=RED, texts="red dog")
        await same(live, got, "/v1/embeddings", {"images": [b64(RED)], "texts": ["red dog"]})
        assert got.dim == len(got.image_embeddings[0]) == len(got.text_embeddings[0])

        got = await client.rank(query_image=RED, candidate_texts=texts, top_k=2)
        await same(live, got, "/v1/retrieval/rank", {"query_image": b64(RED), "candidate_texts": texts,
                                                     "top_k": 2})
        got = await client.rank(query_text="red", candidate_images=[RED, BLUE], rerank=False)
        assert sorted(r.index for r in got.results) == [0, 1] and all(r.itm is None for r in got.results)
        got = await client.rank(query_image=RED, candidate_texts=texts, reranker="toy", rerank=True)
        await same(live, got, "/v1/retrieval/rank", {"query_image": b64(RED), "candidate_texts": texts,
                                                     "reranker": "toy", "rerank": True})
        assert all(r.itm is not None for r in got.results)

        got = await client.capfilt(RED, texts=[["red dog", "a cat"]], num_synthetic=1, seed=1)
        await same(live, got, "/v1/capfilt", {"images": [b64(RED)], "texts": [["red dog", "a cat"]],
                                              "num_synthetic": 1, "seed": 1})
        assert [c.source for c in got.results[0]] == ["web", "web", "synthetic"]
        got = await client.capfilt(RED, texts=[["red dog"]], num_synthetic=1, seed=1, captioner="toy", filter="toy")
        await same(live, got, "/v1/capfilt", {"images": [b64(RED)], "texts": [["red dog"]], "num_synthetic": 1,
                                              "seed": 1, "captioner": "toy", "filter": "toy"})


async def test_admin_calls(live):
    async with sdk(live) as client:
        assert await client.health() and await client.ready()
        (toy,) = await client.models()
        assert toy.name == "toy" and toy.state == "ready" and "caption" in toy.tasks
        assert set(toy.tasks) <= {"caption", "embed", "score", "rank", "vqa", "capfilt"}
        assert toy.family and toy.warnings == [] and toy.capabilities.answers == ANSWERS
        assert "itm" in toy.capabilities.score_heads and "rank" in toy.capabilities.vqa_modes
        raw = await live.client.get("/v1/models")
        assert [m.model_dump() for m in await client.models()] == raw.json()["models"]  # every field, unchanged


@pytest.mark.parametrize("call, error, kind, param", [
    (lambda c: c.caption(RED, model="nope"), vc.NotFoundError, "model_not_found", "model"),
    (lambda c: c.caption(b"not an image"), vc.UnsupportedMediaTypeError, "invalid_image", "images[0]"),
    (lambda c: c.caption(RED, num_beams=0), vc.UnprocessableEntityError, "invalid_request", "num_beams"),
    (lambda c: c.caption([RED] * 5), vc.PayloadTooLargeError, "payload_too_large", "images"),
    (lambda c: c.vqa(RED, "q", num_beams=99), vc.BadRequestError, "invalid_input", "num_beams"),
])
async def test_server_errors_are_typed(live, call, error, kind, param):
    async with sdk(live) as client:
        with pytest.raises(error) as info:
            await call(client)
    assert info.value.type == kind and info.value.param == param and info.value.message
    assert isinstance(info.value, vc.APIStatusError) and info.value.status_code == info.value.response.status_code


async def test_api_key(client_repo):
    async with Live(Settings(model_repo=client_repo, api_key="s3cret")) as live:
        async with sdk(live) as client:
            with pytest.raises(vc.AuthenticationError) as info:
                await client.models()
            assert info.value.status_code == 401 and info.value.type == "unauthorized"
        async with sdk(live, api_key="s3cret") as client:
            assert (await client.models())[0].name == "toy"


def test_sync_client_in_process(settings):
    """The blocking client over Starlette's TestClient (an httpx.Client running the app)."""
    with TestClient(create_app(settings)) as app_client:
        with vc.Client("http://testserver", http_client=app_client) as client:
            client.wait_ready(timeout=60)
            caps = client.caption([RED, BLUE])
            raw = app_client.post("/v1/caption", json={"images": [b64(RED), b64(BLUE)]}).json()
            assert caps.model_dump(exclude_none=True) == raw  # the server leaves unset fields out
            raw = app_client.post("/v1/retrieval/score", json={"images": [b64(RED)], "texts": ["red"]}).json()
            assert client.score(RED, "red").itc == raw["itc"]
        assert not app_client.is_closed  # a client handed in is the caller's to close
