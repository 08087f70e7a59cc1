"""Every route in-process, against the same model used directly."""

import pytest
import torch

from tests.api.conftest import b64, png
from vlserve import load_model

pytestmark = pytest.mark.anyio

RED, BLUE = png((220, 30, 30)), png((30, 70, 220), (64, 64))


@pytest.fixture(scope="module")
def direct(repo):
    return load_model(repo / "toy")


async def test_models_lists_states(live):
    r = await live.client.get("/v1/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert models["toy"]["state"] == "ready"
    assert set(models["toy"]["tasks"]) == {"caption", "embed", "score", "rank", "vqa", "capfilt"}
    assert models["toy"]["graphs"] == ["vision", "text", "fusion", "decoder"]
    assert models["toy"]["details"]["attention"] == "sdpa" and models["toy"]["device"] == "cpu"
    assert models["cap"]["tasks"] == ["caption"]
    assert models["broken"]["state"] == "failed" and "CheckpointError" in models["broken"]["error"]


async def test_health(live):
    assert (await live.client.get("/health/live")).json() == {"status": "live"}
    assert (await live.client.get("/health/ready")).status_code == 200


async def test_caption_matches_direct_use(live, direct):
    r = await live.client.post("/v1/caption", json={"model": "toy", "images": [b64(RED), "data:image/png;base64,"
                                                                                  + b64(BLUE)], "num_beams": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    want = direct.caption([RED, BLUE], num_beams=2, max_new_tokens=8)  # toy's model.toml default
    assert [c[0]["tokens"] for c in body["captions"]] == [c[0].tokens for c in want]
    assert body["captions"][0][0]["text"] == want[0][0].text
    assert body["usage"] == {"images": 2, "generated_tokens": sum(len(c[0].tokens) for c in want)}


async def test_caption_multipart_upload(live, direct):
    files = [("images", ("a.png", RED, "image/png")), ("images", ("b.png", BLUE, "image/png"))]
    r = await live.client.post("/v1/caption", files=files, data={"model": "toy", "max_new_tokens": "5"})
    assert r.status_code == 200, r.text
    want = direct.caption([RED, BLUE], max_new_tokens=5)
    assert [c[0]["tokens"] for c in r.json()["captions"]] == [c[0].tokens for c in want]


async def test_num_captions_with_sampling(live):
    r = await live.client.post("/v1/caption", json={"model": "toy", "images": [b64(RED)], "do_sample": True,
                                                    "seed": 3, "num_captions": 3})
    assert r.status_code == 200
    again = await live.client.post("/v1/caption", json={"model": "toy", "images": [b64(RED)], "do_sample": True,
                                                        "seed": 3, "num_captions": 3})
    assert len(r.json()["captions"][0]) == 3 and r.json() == again.json()


async def test_embeddings(live, direct):
    r = await live.client.post("/v1/embeddings", json={"images": [b64(RED)], "texts": ["red dog", "a cat"]})
    body = r.json()
    assert r.status_code == 200 and body["model"] == "toy" and body["dim"] == 16
    torch.testing.assert_close(torch.tensor(body["image_embeddings"]), direct.embed_images([RED]))
    torch.testing.assert_close(torch.tensor(body["text_embeddings"]), direct.embed_texts(["red dog", "a cat"]))
    only_text = (await live.client.post("/v1/embeddings", json={"texts": ["red"]})).json()
    assert "image_embeddings" not in only_text


async def test_score(live, direct):
    r = await live.client.post("/v1/retrieval/score", json={"images": [b64(RED), b64(BLUE)],
                                                            "texts": ["red dog", "a cat", "blue"],
                                                            "heads": ["itc", "itm"]})
    body = r.json()
    want = direct.score([RED, BLUE], ["red dog", "a cat", "blue"])
    torch.testing.assert_close(torch.tensor(body["itc"]), want["itc"], atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(body["itm"]), want["itm"], atol=1e-5, rtol=0)
    itc_only = (await live.client.post("/v1/retrieval/score", json={"images": [b64(RED)], "texts": ["x"]})).json()
    assert "itm" not in itc_only and len(itc_only["itc"]) == 1


async def test_rank_both_ways(live, direct):
    texts = ["red dog", "a cat", "blue", "yes", "two"]
    r = await live.client.post("/v1/retrieval/rank", json={"query_image": b64(RED), "candidate_texts": texts,
                                                           "k_itc": 3, "top_k": 2})
    want = direct.rank(image=RED, candidates=texts, k_itc=3, top_k=2)
    assert [x["index"] for x in r.json()["results"]] == [x.index for x in want]
    r = await live.client.post("/v1/retrieval/rank", json={"query_text": "red", "rerank": False,
                                                           "candidate_images": [b64(RED), b64(BLUE)]})
    results = r.json()["results"]
    assert len(results) == 2 and all(x["itm"] is None for x in results)


async def test_vqa_generate_and_rank(live, direct):
    r = await live.client.post("/v1/vqa", json={"images": [b64(RED), b64(BLUE)],
                                                "questions": ["what color", "how many dogs"]})
    want = direct.vqa([RED, BLUE], ["what color", "how many dogs"])
    assert [a["tokens"] for a in r.json()["answers"]] == [a.tokens for a in want]
    r = await live.client.post("/v1/vqa", json={"images": [b64(RED)], "questions": ["what color"],
                                                "rank_answers": True})
    ranked = r.json()["answers"][0]["ranked"]
    assert {x["text"] for x in ranked} == {"red", "blue", "yes"}
    assert sum(x["prob"] for x in ranked) == pytest.approx(1.0, abs=1e-4)


async def test_openapi_is_valid(live):
    from openapi_spec_validator import validate

    spec = (await live.client.get("/openapi.json")).json()
    validate(spec)
    body = spec["paths"]["/v1/caption"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"].endswith("CaptionRequest")
    assert spec["components"]["schemas"]["CaptionRequest"]["examples"]


async def test_capfilt(live):
    r = await live.client.post("/v1/capfilt", json={"model": "toy", "images": [b64(RED)],
                                                    "texts": [["red dog", "a cat"]], "num_synthetic": 2,
                                                    "threshold": 0.3, "seed": 1})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert [c["source"] for c in res[:2]] == ["web", "web"]
    assert all(c["kept"] == (c["itm"] >= 0.3) for c in res)
