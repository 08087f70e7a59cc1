"""OpenAI's embeddings body on /v1/embeddings and model list (issue 15), driven by the real `openai` SDK: texts,
images as vLLM/infinity/Jina items and as content parts, messages, base64 encoding, usage,
for each family with embeddings; the answers equal vlserve's own body's; what is refused."""

import base64
import struct

import httpx
import pytest

from tests.api.conftest import Live, b64, png
from vlserve.settings import Settings

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.anyio
FAMILIES = ("blip", "coca", "beit3")
TEXTS = ["a red square", "two blue circles"]

@pytest.fixture
def live(live3):
    return live3  # this module's tests run on the three families





def sdk(live) -> "openai.AsyncOpenAI":
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=live.app), base_url="http://test", timeout=60)
    return openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)


def data_uri(color) -> str:
    return "data:image/png;base64," + b64(png(color))


async def ours(live, model, images=None, texts=None):
    body = {"model": model} | ({"images": images} if images else {}) | ({"texts": texts} if texts else {})
    r = await live.client.post("/v1/embeddings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("family", FAMILIES)
async def test_texts_and_images_through_the_sdk_equal_vlserves_own_body(live, family):
    client = sdk(live)
    red, blue = data_uri((200, 30, 30)), data_uri((30, 30, 200))
    out = await client.embeddings.create(model=family, input=[
        TEXTS[0], {"image": red}, {"type": "image_url", "image_url": {"url": blue}}, {"text": TEXTS[1]}])
    assert out.object == "list" and out.model == family and [d.index for d in out.data] == [0, 1, 2, 3]
    want = await ours(live, family, images=[b64(png((200, 30, 30))), b64(png((30, 30, 200)))], texts=TEXTS)
    got = [d.embedding for d in out.data]
    for a, b in ((got[0], want["text_embeddings"][0]), (got[1], want["image_embeddings"][0]),
                 (got[2], want["image_embeddings"][1]), (got[3], want["text_embeddings"][1])):
        assert len(a) == want["dim"] and max(abs(x - y) for x, y in zip(a, b)) < 1e-6
    assert out.usage.prompt_tokens == out.usage.total_tokens > 0


async def test_token_counts_one_string_and_base64(live):
    client = sdk(live)
    one = await client.embeddings.create(model="blip", input=TEXTS[0])
    two = await client.embeddings.create(model="blip", input=TEXTS)
    assert len(one.data) == 1 and two.usage.prompt_tokens > one.usage.prompt_tokens >= 3  # [CLS] a red square [SEP]
    r = await live.client.post("/v1/embeddings", json={"model": "blip", "input": TEXTS, "encoding_format": "base64"})
    raw = base64.b64decode(r.json()["data"][1]["embedding"])
    floats = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert max(abs(x - y) for x, y in zip(floats, two.data[1].embedding)) < 1e-6
    sdk_b64 = await client.embeddings.create(model="coca", input=TEXTS)  # the SDK asks base64 and decodes it
    assert len(sdk_b64.data[0].embedding) == (await ours(live, "coca", texts=TEXTS))["dim"]


async def test_messages_form(live):
    red = data_uri((200, 30, 30))
    r = await live.client.post("/v1/embeddings", json={"model": "coca", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}]},
        {"role": "user", "content": TEXTS[0]}]})
    assert r.status_code == 200, r.text
    want = await ours(live, "coca", images=[b64(png((200, 30, 30)))], texts=TEXTS[:1])
    got = [d["embedding"] for d in r.json()["data"]]
    assert max(abs(x - y) for x, y in zip(got[0], want["image_embeddings"][0])) < 1e-6
    assert max(abs(x - y) for x, y in zip(got[1], want["text_embeddings"][0])) < 1e-6


@pytest.mark.parametrize("body,status,param", [
    ({"input": [[1, 2, 3]]}, 400, "input[0]"),
    ({"input": [5]}, 400, "input[0]"),
    ({"input": []}, 400, "input"),
    ({"input": [{"image": "x", "text": "y"}]}, 400, "input[0]"),
    ({"input": ["a"], "messages": []}, 400, "input"),
    ({"input": ["a"], "dimensions": 7}, 400, "dimensions"),
    ({"input": [""]}, 400, "input.texts[0]"),
    ({"input": ["a"], "encoding_format": "int8"}, 422, "encoding_format"),
    ({"messages": [{"role": "system", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
     400, "messages[0].content"),
    ({"input": [{"image": "data:image/png;base64,AAAA"}]}, 415, "input.images[0]"),
])
async def test_refused_clearly(live, body, status, param):
    r = await live.client.post("/v1/embeddings", json={"model": "blip"} | body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param, r.json()


async def test_dimensions_equal_to_the_models_own_are_accepted(live):
    dim = (await ours(live, "beit3", texts=TEXTS[:1]))["dim"]
    out = await sdk(live).embeddings.create(model="beit3", input=TEXTS[:1], dimensions=dim)
    assert len(out.data[0].embedding) == dim


async def test_an_image_item_is_not_held_to_the_text_length_limit(three):
    async with Live(Settings(model_repo=three, max_text_chars=100)) as live:
        uri = data_uri((10, 200, 10))
        assert len(uri) > 100
        r = await live.client.post("/v1/embeddings", json={"model": "blip", "input": [{"image": uri}]})
        assert r.status_code == 200, r.text
        r = await live.client.post("/v1/embeddings", json={"model": "blip", "input": ["x" * 101]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input[0]"


async def test_models_list_in_openais_shape_beside_vlserves(live):
    listed = await sdk(live).models.list()
    assert sorted(m.id for m in listed.data) == sorted(FAMILIES)
    assert all(m.object == "model" and m.owned_by == "vlserve" and m.created > 1_700_000_000 for m in listed.data)
    body = (await live.client.get("/v1/models")).json()
    assert body["object"] == "list" and sorted(m["name"] for m in body["models"]) == sorted(FAMILIES)
