"""The protocol fronts (issue 15) over the network, with their real clients against the
subprocess server: the openai SDK (embeddings, models, chat with and without streaming), rerank
with httpx, LangChain's OpenAIEmbeddings and
tritonclient's InferenceServerClient (health, metadata, infer); answers equal the v1 routes'."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.server_process import ServerProcess

openai = pytest.importorskip("openai")
http = pytest.importorskip("tritonclient.http")


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(e2e_repo):
    with ServerProcess("--model-repo", str(e2e_repo)) as server:
        server.wait_ready()
        yield server


def test_openai_sdk_over_the_network(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    image = "data:image/png;base64," + base64.b64encode(png((200, 30, 30))).decode()
    assert [m.id for m in client.models.list().data] == ["toy"]
    emb = client.embeddings.create(model="toy", input=["a red square", {"image": image}])
    want = httpx.post(server.url + "/v1/embeddings", json={"texts": ["a red square"],
                                                           "images": [image]}, timeout=60).json()
    assert np.allclose(emb.data[0].embedding, want["text_embeddings"][0], atol=1e-6)
    assert np.allclose(emb.data[1].embedding, want["image_embeddings"][0], atol=1e-6)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}]
    whole = client.chat.completions.create(model="toy", messages=messages, max_tokens=8)
    chunks = [e.choices[0].delta.content or "" for e in
              client.chat.completions.create(model="toy", messages=messages, max_tokens=8, stream=True) if e.choices]
    assert "".join(chunks) == whole.choices[0].message.content and len(chunks) >= 2


def test_tritonclient_over_the_network(server):
    client = http.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("toy")
    meta = client.get_model_metadata("toy")
    assert meta["name"] == "toy" and {"IMAGE", "TEXT"} <= {t["name"] for t in meta["inputs"]}
    image = http.InferInput("IMAGE", [1], "BYTES")
    image.set_data_from_numpy(np.array([png((30, 30, 200))], dtype=object))
    out = client.infer("toy", [image], parameters={"max_new_tokens": 6})
    want = httpx.post(server.url + "/v1/caption", json={"images": [base64.b64encode(png((30, 30, 200))).decode()],
                                                        "max_new_tokens": 6}, timeout=60).json()
    assert out.as_numpy("CAPTION")[0].decode() == want["captions"][0][0]["text"]
    text = http.InferInput("TEXT", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"a blue square", b"a red circle"], dtype=object))
    scores = client.infer("toy", [image, text]).as_numpy("ITM")
    assert scores.shape == (1, 2) and ((0 <= scores) & (scores <= 1)).all()
    with pytest.raises(http.InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


def test_langchain_openai_embeddings_against_vlserve(server):
    lc = pytest.importorskip("langchain_openai")
    # tiktoken's length check would download its encoding: vlserve counts tokens itself
    emb = lc.OpenAIEmbeddings(model="toy", base_url=server.url + "/v1", api_key="unused",
                              check_embedding_ctx_length=False, max_retries=0)
    docs = emb.embed_documents(["a red square", "two blue circles"])
    query = emb.embed_query("a red square")
    want = httpx.post(server.url + "/v1/embeddings", json={"texts": ["a red square", "two blue circles"]},
                      timeout=60).json()["text_embeddings"]
    assert np.allclose(docs, want, atol=1e-6) and np.allclose(query, want[0], atol=1e-6)


def test_rerank_over_the_network(server):
    images = [base64.b64encode(png(c)).decode() for c in ((200, 30, 30), (30, 30, 200))]
    out = httpx.post(server.url + "/v1/rerank", timeout=60, json={
        "query": "a blue square", "documents": [{"image": "data:image/png;base64," + i} for i in images]}).json()
    want = httpx.post(server.url + "/v1/retrieval/rank", timeout=60, json={
        "query_text": "a blue square", "candidate_images": images}).json()["results"]
    assert [(r["index"], round(r["relevance_score"], 6)) for r in out["results"]] == \
        [(r["index"], round(r["itm"], 6)) for r in want]
