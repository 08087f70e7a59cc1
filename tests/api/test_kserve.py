"""KServe v2 / Open Inference Protocol on /v2 (issue 15), with tritonclient's own request
encoding and response decoding (binary tensors and JSON): server and model metadata, health,
readiness, and infer for caption, score, embed and vqa, equal to the v1 routes' answers;
errors as {"error": ...}. The real InferenceServerClient over the network: tests/e2e."""

import json

import numpy as np
import pytest

from tests.api.conftest import b64, png

http = pytest.importorskip("tritonclient.http")
from tritonclient.http._infer_result import InferResult  # noqa: E402
from tritonclient.http._utils import _get_inference_request  # noqa: E402

pytestmark = pytest.mark.anyio
COLORS = [(200, 30, 30), (30, 30, 200)]
TEXTS = ["a red square", "two blue circles"]

@pytest.fixture
def live(live3):
    return live3  # this module's tests run on the three families



def tensor(name, values, binary=True):
    t = http.InferInput(name, [len(values)], "BYTES")
    t.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return t


async def infer(live, model, inputs, outputs=None, parameters=None, status=200):
    body, header = _get_inference_request(inputs, "req-1", outputs, 0, False, False, 0, None, parameters)
    headers = {"Inference-Header-Content-Length": str(header)} if header is not None else {}
    r = await live.client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == status, r.text
    if status != 200:
        return r.json()
    length = r.headers.get("inference-header-content-length")
    return InferResult.from_response_body(r.content, header_length=int(length) if length else None)


async def v1(live, path, **body):
    r = await live.client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_server_and_model_metadata_health_and_readiness(live):
    assert (await live.client.get("/v2")).json()["name"] == "vlserve"
    assert (await live.client.get("/v2/health/live")).status_code == 200
    assert (await live.client.get("/v2/health/ready")).status_code == 200
    meta = (await live.client.get("/v2/models/blip")).json()
    assert meta["name"] == "blip" and meta["versions"] == ["1"] and meta["platform"] == "vlserve_blip"
    assert {t["name"] for t in meta["inputs"]} == {"IMAGE", "TEXT", "QUESTION"}
    assert {"CAPTION", "ITM", "ANSWER"} <= {t["name"] for t in meta["outputs"]}
    coca = (await live.client.get("/v2/models/coca/versions/1")).json()
    assert "ITM" in {t["name"] for t in coca["outputs"]}  # the score signature; CoCa's answer has no ITM
    assert list(coca["parameters"]["tasks"]) == ["caption", "embed", "score"]
    assert meta["parameters"]["tasks"]["vqa"] == {"inputs": ["IMAGE", "QUESTION"], "outputs": ["ANSWER"]}
    assert (await live.client.get("/v2/models/beit3/ready")).status_code == 200
    r = await live.client.get("/v2/models/nope")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("model", ["blip", "coca", "beit3"])
async def test_caption_equals_the_caption_route(live, model, binary):
    images = [png(c) for c in COLORS]
    values = images if binary else ["data:image/png;base64," + b64(i) for i in images]
    out = await infer(live, model, [tensor("IMAGE", values, binary)], parameters={"max_new_tokens": 5})
    want = await v1(live, "/v1/caption", model=model, images=[b64(i) for i in images], max_new_tokens=5)
    assert [c.decode() for c in out.as_numpy("CAPTION")] == [c[0]["text"] for c in want["captions"]]
    assert np.allclose(out.as_numpy("LOGPROB"), [c[0]["logprob"] for c in want["captions"]], atol=1e-5)
    assert out.get_response()["model_name"] == model and out.get_response()["id"] == "req-1"


async def test_score_embed_and_vqa(live):
    images = [png(c) for c in COLORS]
    out = await infer(live, "blip", [tensor("IMAGE", images), tensor("TEXT", TEXTS)])
    want = await v1(live, "/v1/retrieval/score", model="blip", images=[b64(i) for i in images], texts=TEXTS,
                    heads=["itc", "itm"])
    assert np.allclose(out.as_numpy("ITC"), want["itc"], atol=1e-6) and out.as_numpy("ITM").shape == (2, 2)
    assert np.allclose(out.as_numpy("ITM"), want["itm"], atol=1e-6)
    coca = await infer(live, "coca", [tensor("IMAGE", images), tensor("TEXT", TEXTS)])
    assert coca.as_numpy("ITM") is None and coca.as_numpy("ITC").shape == (2, 2)
    emb = await infer(live, "beit3", [tensor("TEXT", TEXTS)])
    want = await v1(live, "/v1/embeddings", model="beit3", texts=TEXTS)
    assert np.allclose(emb.as_numpy("TEXT_EMBEDDING"), want["text_embeddings"], atol=1e-6)
    both = await infer(live, "blip", [tensor("IMAGE", images[:1]), tensor("TEXT", TEXTS)],
                       parameters={"task": "embed"})
    assert both.as_numpy("IMAGE_EMBEDDING").shape[0] == 1 and both.as_numpy("TEXT_EMBEDDING").shape[0] == 2
    answers = await infer(live, "beit3", [tensor("IMAGE", images), tensor("QUESTION", ["what color?"] * 2)])
    want = await v1(live, "/v1/vqa", model="beit3", images=[b64(i) for i in images], questions=["what color?"] * 2)
    assert [a.decode() for a in answers.as_numpy("ANSWER")] == [a["text"] for a in want["answers"]]


async def test_requested_outputs_in_json(live):
    images = [png(COLORS[0])]
    out = await infer(live, "blip", [tensor("IMAGE", images), tensor("TEXT", TEXTS)],
                      outputs=[http.InferRequestedOutput("ITC", binary_data=False)])
    response = out.get_response()
    assert [o["name"] for o in response["outputs"]] == ["ITC"] and "data" in response["outputs"][0]


@pytest.mark.parametrize("inputs,parameters,status", [
    (lambda: [tensor("TEXT", TEXTS)], {"task": "caption"}, 400),
    (lambda: [tensor("QUESTION", ["x"])], None, 400),
    (lambda: [tensor("IMAGE", [png(COLORS[0])])], {"num_beams": 0}, 400),
    (lambda: [tensor("IMAGE", [png(COLORS[0])])], {"frobnicate": 1}, 400),
    (lambda: [tensor("IMAGE", [b"not an image"])], None, 415),
    (lambda: [tensor("IMAGE", [png(COLORS[0])]), tensor("QUESTION", ["x"])], {"task": "vqa"}, 400),
])
async def test_errors_are_openinference_errors(live, inputs, parameters, status):
    model = "coca" if parameters == {"task": "vqa"} else "blip"
    out = await infer(live, model, inputs(), parameters=parameters, status=status)
    assert isinstance(out["error"], str) and out["error"]


async def test_malformed_bodies(live):
    r = await live.client.post("/v2/models/blip/infer", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    body = json.dumps({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 10}}]}).encode()
    r = await live.client.post("/v2/models/blip/infer", content=body + b"\x09\x00\x00\x00abc",
                               headers={"Inference-Header-Content-Length": str(len(body))})
    assert r.status_code == 400 and "truncated" in r.json()["error"]
    r = await live.client.post("/v2/models/blip/infer", content=body + b"\x03\x00\x00\x00abcdef",
                               headers={"Inference-Header-Content-Length": str(len(body))})  # 10 bytes: 3 + junk
    assert r.status_code == 400 and "truncated" in r.json()["error"]


async def test_texts_get_the_servers_text_limits(three):
    from tests.api.conftest import Live
    from vlserve.settings import Settings

    async with Live(Settings(model_repo=three, max_text_chars=10, max_texts=2)) as live:
        image = tensor("IMAGE", [png(COLORS[0])])
        long = await infer(live, "blip", [image, tensor("TEXT", ["x" * 11])], status=400)
        many = await infer(live, "blip", [image, tensor("TEXT", ["a", "b", "c"])], status=413)
        assert "10" in long["error"] and "2" in many["error"]
