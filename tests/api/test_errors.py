"""Every error path answers with the right status and a JSON error body, without internals."""

import pytest

from tests.api.conftest import Live, b64, png
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
IMG = b64(png())


async def post(live, path, body=None, **kw):
    r = await live.client.post(path, json=body, **kw) if body is not None else await live.client.post(path, **kw)
    return r.status_code, r.json() if r.content else None


@pytest.mark.parametrize("path,body,status,kind,param", [
    ("/v1/caption", {"model": "toy", "images": ["***not base64***"]}, 400, "invalid_input", "images[0]"),
    ("/v1/caption", {"model": "toy", "images": [b64(b"plain text, not an image")]}, 415, "invalid_image", "images[0]"),
    ("/v1/caption", {"model": "toy", "images": ["data:image/png,rawdata"]}, 400, "invalid_input", "images[0]"),
    ("/v1/caption", {"model": "toy", "images": [IMG] * 5}, 413, "payload_too_large", "images"),
    ("/v1/caption", {"model": "toy", "images": []}, 422, "invalid_request", "images"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "max_new_tokens": -1}, 422, "invalid_request", "max_new_tokens"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "beams": 2}, 422, "invalid_request", "beams"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "num_beams": 9}, 400, "invalid_input", "num_beams"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "max_new_tokens": 60}, 400, "invalid_input", "max_new_tokens"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "min_new_tokens": 9}, 400, "invalid_input", "min_new_tokens"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "num_captions": 2}, 400, "invalid_input", "num_captions"),
    ("/v1/caption", {"model": "toy", "images": ["https://example.com/cat.png"]}, 400, "invalid_input", "images[0]"),
    ("/v1/caption", {"images": [IMG]}, 400, "invalid_input", "model"),  # toy and cap both caption
    ("/v1/caption", {"model": "nope", "images": [IMG]}, 404, "model_not_found", "model"),
    ("/v1/caption", {"model": "broken", "images": [IMG]}, 500, "model_failed", "model"),  # not coming back
    ("/v1/vqa", {"model": "cap", "images": [IMG], "questions": ["q"]}, 400, "unsupported_task", "model"),
    ("/v1/vqa", {"images": [IMG, IMG], "questions": ["q"]}, 400, "invalid_input", "questions"),
    ("/v1/vqa", {"images": [IMG], "questions": [""]}, 400, "invalid_input", "questions[0]"),
    ("/v1/embeddings", {"texts": ["red " * 60]}, 400, "text_too_long", "texts[0]"),
    ("/v1/embeddings", {"texts": ["x" * 5000]}, 400, "invalid_input", "texts[0]"),
    ("/v1/embeddings", {"texts": ["a"] * 9}, 413, "payload_too_large", "texts"),
    ("/v1/embeddings", {}, 400, "invalid_input", "images"),
    ("/v1/retrieval/score", {"images": [IMG], "texts": ["a"], "heads": ["xyz"]}, 422, "invalid_request", "heads.0"),
    ("/v1/retrieval/rank", {"candidate_texts": ["a"]}, 400, "invalid_input", "query_image"),
])
async def test_bad_requests(live, path, body, status, kind, param):
    code, err = await post(live, path, body)
    assert code == status, err
    assert err["error"]["type"] == kind and err["error"]["param"] == param
    assert "Traceback" not in err["error"]["message"]


async def test_nan_temperature_is_refused(live):
    r = await live.client.post("/v1/caption", content=b'{"model": "toy", "images": ["%s"], "temperature": NaN}'
                               % IMG.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and r.json()["error"]["param"] == "temperature"


async def test_malformed_json_and_media_type(live):
    r = await live.client.post("/v1/caption", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_input"
    r = await live.client.post("/v1/caption", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"


async def test_body_over_the_limit(live):
    r = await live.client.post("/v1/caption", json={"model": "toy", "images": ["A" * 2_100_000]})
    assert r.status_code == 413


async def test_unknown_route_is_json(live):
    r = await live.client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"


async def test_unexpected_failure_is_500_without_internals(live, monkeypatch):
    engine = live.gateway.repository.models["toy"].engine

    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "encode_images", boom)
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": [IMG]})
    assert code == 500 and err["error"]["type"] == "internal_error"
    assert "secret" not in err["error"]["message"]


async def test_api_key(repo):
    async with Live(Settings(model_repo=repo, api_key="s3cret")) as live:
        code, err = await post(live, "/v1/embeddings", {"model": "toy", "texts": ["a"]})
        assert code == 401 and err["error"]["type"] == "unauthorized"
        r = await live.client.post("/v1/embeddings", json={"model": "toy", "texts": ["a"]},
                                   headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert (await live.client.get("/health/ready")).status_code == 200  # probes need no key


async def test_strict_readiness_with_a_broken_model(repo):
    async with Live(Settings(model_repo=repo, strict_readiness=True)) as live:
        r = await live.client.get("/health/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
        # the server stays live and serves what did load
        assert (await live.client.post("/v1/embeddings", json={"model": "toy", "texts": ["a"]})).status_code == 200
