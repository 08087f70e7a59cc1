"""Bad input gets a clear 4xx, never a 500, and costs nothing beyond itself (issue 14:
items 2, 3, 5, 9, 11, 12, 13, 14)."""

import asyncio
import io
import json
import threading

import httpx
import pytest
from PIL import Image

from tests.api.conftest import Live, b64, png
from vlserve.settings import Settings

pytestmark = pytest.mark.anyio
IMG = b64(png())


async def post(live, path, body, **kw):
    r = await live.client.post(path, json=body, **kw)
    return r.status_code, r.json()["error"] if r.status_code >= 400 else r.json()


async def raw(live, path, content: bytes, ctype="application/json"):
    r = await live.client.post(path, content=content, headers={"content-type": ctype})
    return r.status_code, r.json()


# -- item 5: input errors are 4xx, not 500 --------------------------------------------------

@pytest.mark.parametrize("content,why", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"model": "toy", "images": ["x"], "seed": ' + b"7" * 5000 + b"}", "not valid JSON"),
    (b'{"model": "toy", "texts": ["a"], "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "not valid JSON"),
])
async def test_pathological_json_is_400(live, content, why):
    code, body = await raw(live, "/v1/embeddings", content)
    assert code == 400 and why in body["error"]["message"], body


@pytest.mark.parametrize("path,body,param", [
    ("/v1/caption", {"model": "\ud800", "images": [IMG]}, "model"),
    ("/v1/embeddings", {"model": "toy", "texts": ["a \udfff"]}, "texts[0]"),
    ("/v1/caption", {"model": "toy", "images": [IMG], "prompt": "\ud800"}, "prompt"),
    ("/v1/vqa", {"model": "toy", "images": [IMG], "questions": ["what \ud83d?"]}, "questions[0]"),
])
async def test_lone_surrogates_are_400(live, path, body, param):
    content = json.dumps(body).encode()  # json escapes the surrogate: "\ud800" travels as ASCII
    code, out = await raw(live, path, content)
    assert code == 400 and out["error"]["param"] == param, out


@pytest.mark.parametrize("field,value", [("seed", -10**19), ("seed", 2**64), ("seed", False), ("top_k", 10**19),
                                         ("temperature", 1e-46), ("length_penalty", 1e308),
                                         ("repetition_penalty", 1e-46), ("timeout_s", 5e-324)])
async def test_out_of_range_generation_fields_are_422(live, field, value):
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": [IMG], field: value, "do_sample": True})
    assert code == 422 and err["param"] == field, err


async def test_a_tiny_timeout_does_not_hide_a_bad_image(live):
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": [b64(b"not an image")], "timeout_s": 0.01})
    assert code in (415, 422), err


@pytest.mark.parametrize("body,param", [
    ({"model": "toy", "images": [IMG], "questions": ["q?"], "rank_answers": 0}, "rank_answers"),
    ({"model": "toy", "images": [IMG], "questions": ["q?"], "max_new_tokens": "5"}, "max_new_tokens"),
    ({"model": "toy", "images": [IMG], "questions": "what?"}, "questions"),
])
async def test_json_types_are_taken_as_sent(live, body, param):
    code, err = await post(live, "/v1/vqa", body)
    assert code == 422 and err["param"] == param, err


@pytest.mark.parametrize("data,param", [
    ({"model": "toy", "seed": "false", "do_sample": "true"}, "seed"),
    ({"model": "toy", "do_sample": "yes"}, "do_sample"),
    ({"model": "toy", "num_beams": "2.5"}, "num_beams"),
])
async def test_multipart_fields_are_text_converted_to_their_type(live, data, param):
    files = [("images", ("a.png", png(), "image/png"))]
    r = await live.client.post("/v1/caption", files=files, data=data)
    assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text


async def test_multipart_capfilt_texts_are_not_json_decoded(live):
    files = [("images", ("a.png", png(), "image/png"))]
    r = await live.client.post("/v1/capfilt", files=files, data={"model": "toy", "texts": '["a", "b"]'})
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("texts"), r.text


# -- item 2: text is capped before tokenising, tokenised off the event loop ---------------

async def test_prompt_is_capped_in_characters(live):
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": [IMG], "prompt": "a " * 5000})
    assert code == 400 and err["param"] == "prompt" and "characters" in err["message"]


async def test_texts_are_tokenised_off_the_event_loop(live, monkeypatch):
    tokenizer = live.gateway.repository.models["toy"].engine.tokenizer
    seen, real = [], tokenizer.validate

    def recording(*args, **kw):
        seen.append(threading.current_thread())
        return real(*args, **kw)

    monkeypatch.setattr(tokenizer, "validate", recording)
    code, _ = await post(live, "/v1/embeddings", {"model": "toy", "texts": ["a red circle"]})
    assert code == 200 and seen and threading.main_thread() not in seen


# -- item 3: the body cap holds for every transfer encoding --------------------------------

async def test_chunked_multipart_stops_reading_at_the_cap(live):
    cap = live.gateway.settings.max_body_bytes
    pulled = []

    async def chunks():  # no Content-Length: the body is sent chunked
        yield b"--xyz\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(4 * cap // 65536):
            pulled.append(65536)
            yield b"\0" * 65536
        yield b"\r\n--xyz--\r\n"

    r = await live.client.post("/v1/caption", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    assert r.headers["connection"] == "close"  # the rest is never read
    assert sum(pulled) <= cap + 2 * 65536


async def test_a_declared_length_over_the_cap_is_refused_unread(live):
    big = b"{" + b" " * (live.gateway.settings.max_body_bytes + 10) + b"}"
    r = await live.client.post("/v1/caption", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["connection"] == "close"


# -- item 9: no redirect built from request headers ----------------------------------------

async def test_trailing_slash_is_not_redirected_to_the_host_header(live):
    r = await live.client.get("/v1/models/", headers={"host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


# -- item 11: authentication edge cases ----------------------------------------------------

def test_a_set_but_empty_api_key_refuses_to_start(repo):
    with pytest.raises(ValueError, match="set but empty"):
        Settings(model_repo=repo, api_key="  ")


@pytest.mark.parametrize("open_docs", [False, True])
async def test_api_key_scheme_is_case_insensitive_and_admin_routes_follow_the_setting(repo, open_docs):
    async with Live(Settings(model_repo=repo, api_key="s3cret", auth_metrics_and_docs=not open_docs)) as live:
        body = {"model": "toy", "texts": ["a"]}
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = await live.client.post("/v1/embeddings", json=body, headers={"authorization": f"{scheme} s3cret"})
            assert r.status_code == 200, scheme
        r = await live.client.post("/v1/embeddings", json=body, headers={"authorization": "Basic s3cret"})
        assert r.status_code == 401
        assert (await live.client.get("/v1/models")).status_code == 401
        for path in ("/metrics", "/openapi.json"):
            assert (await live.client.get(path)).status_code == (200 if open_docs else 401), path
            ok = await live.client.get(path, headers={"x-api-key": "s3cret"})
            assert ok.status_code == 200
        assert (await live.client.get("/health/live")).status_code == 200



async def test_both_probe_pairs_need_no_key_and_live_stays_up_while_draining(repo):
    """Kubernetes and KServe probe /health/* or /v2/health/*: a draining pod must stay live
    (else it is restarted mid-drain) and turn unready; neither pair may need the key."""
    async with Live(Settings(model_repo=repo, api_key="s3cret")) as live:
        for prefix in ("", "/v2"):
            assert (await live.client.get(f"{prefix}/health/live")).status_code == 200, prefix
            assert (await live.client.get(f"{prefix}/health/ready")).status_code == 200, prefix
        live.gateway.draining = True
        try:
            for prefix in ("", "/v2"):
                assert (await live.client.get(f"{prefix}/health/live")).status_code == 200, prefix
                assert (await live.client.get(f"{prefix}/health/ready")).status_code == 503, prefix
        finally:
            live.gateway.draining = False

# -- item 12: failed models ----------------------------------------------------------------

async def test_a_failed_model_is_not_retryable_and_paths_are_relative(live, repo):
    r = await live.client.post("/v1/caption", json={"model": "broken", "images": [IMG]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "model_failed"
    assert "retry-after" not in r.headers
    models = (await live.client.get("/v1/models")).text
    assert str(repo) not in models and str(repo) not in r.text
    assert "broken/" in json.loads(models)["models"][0]["error"] or "broken" in models


async def test_strict_readiness_names_the_failed_model(repo):
    async with Live(Settings(model_repo=repo, strict_readiness=True)) as live:
        r = await live.client.get("/health/ready")
        assert r.status_code == 503 and "broken" in r.json()["error"]["message"]
        assert "no model loaded" not in r.json()["error"]["message"]


# -- item 14: only image formats, only image data URIs -------------------------------------

def encoded(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PCX", "SGI", "TGA", "ICO", "PPM", "IM", "DDS", "QOI"])
async def test_formats_outside_the_allow_list_are_415(live, fmt):
    code, err = await post(live, "/v1/embeddings", {"model": "toy", "images": [b64(encoded(fmt))]})
    assert code == 415 and err["type"] == "invalid_image" and "accepted formats" in err["message"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
async def test_allow_listed_formats_are_decoded(live, fmt):
    code, _ = await post(live, "/v1/embeddings", {"model": "toy", "images": [b64(encoded(fmt))]})
    assert code == 200


@pytest.mark.parametrize("uri", [f"data:text/plain;base64,{IMG}", f"data:;base64,{IMG}",
                                 f"data:application/octet-stream;base64,{IMG}"])
async def test_data_uris_must_say_image(live, uri):
    code, err = await post(live, "/v1/embeddings", {"model": "toy", "images": [uri]})
    assert code == 400 and "not an image" in err["message"]
    ok, _ = await post(live, "/v1/embeddings", {"model": "toy", "images": [f"data:image/png;base64,{IMG}"]})
    assert ok == 200


# -- item 13: /metrics in the OpenAPI document ---------------------------------------------

async def test_metrics_content_type_is_documented(live):
    spec = (await live.client.get("/openapi.json")).json()
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert any(c.startswith("text/plain") for c in content)
    r = await live.client.get("/metrics")
    assert r.headers["content-type"].split(";")[0] in content or any(
        r.headers["content-type"].startswith(c.split(";")[0]) for c in content)


# -- the last error boundary keeps the connection --------------------------------------------

async def test_an_unexpected_error_is_answered_here_and_not_reraised(live, monkeypatch):
    engine = live.gateway.repository.models["toy"].engine
    monkeypatch.setattr(engine, "text_embeddings", lambda *a: (_ for _ in ()).throw(RuntimeError("secret")))
    # raise_app_exceptions: anything that escaped the app (as Starlette's own boundary lets
    # it, and uvicorn then drops the connection) would raise here
    strict = httpx.AsyncClient(transport=httpx.ASGITransport(app=live.app, raise_app_exceptions=True),
                               base_url="http://test")
    async with strict:
        r = await strict.post("/v1/embeddings", json={"model": "toy", "texts": ["a"]})
    assert r.status_code == 500 and r.json()["error"]["type"] == "internal_error" and "secret" not in r.text


async def test_concurrent_bad_inputs_do_not_disturb_a_good_request(live):
    bad = [raw(live, "/v1/embeddings", b"[" * 50_000), raw(live, "/v1/embeddings", b'{"texts": ["\\ud800"]}'),
           post(live, "/v1/caption", {"model": "toy", "images": [IMG], "top_k": 10**19, "do_sample": True})]
    good = post(live, "/v1/embeddings", {"model": "toy", "texts": ["a red circle"]})
    results = await asyncio.gather(*bad, good)
    assert [c for c, _ in results[:3]] == [400, 400, 422] and results[3][0] == 200
