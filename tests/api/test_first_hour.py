"""What a new user met in the first hour (issue 16, first part): clear errors for a non-image,
a file path sent as base64, URL-safe base64 accepted, every schema problem named at once, and
`vlserve serve` refusing a model repository that does not exist."""

import base64
import subprocess
import sys

import pytest

from tests.api.conftest import png

pytestmark = pytest.mark.anyio


async def post(live, path, body):
    r = await live.client.post(path, json=body)
    return r.status_code, r.json().get("error", {})


async def test_a_non_image_says_so_without_python_internals(live):
    r = await live.client.post("/v1/embeddings", files={"images": ("notes.txt", b"hello, I am text")},
                               data={"model": "toy"})
    err = r.json()["error"]
    assert r.status_code == 415 and err["message"].startswith("not an image (or an unsupported format)")
    assert "BytesIO" not in err["message"] and err["param"] == "images[0]"


async def test_url_safe_base64_without_padding_is_an_image(live):
    data = png((250, 250, 250), (37, 41))
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in urlsafe or "_" in urlsafe or len(data) % 3  # exercises one of the two differences
    code, _ = await post(live, "/v1/embeddings", {"model": "toy", "images": [urlsafe]})
    want = (await live.client.post("/v1/embeddings", json={"model": "toy", "images": [
        base64.b64encode(data).decode()]})).json()
    got = (await live.client.post("/v1/embeddings", json={"model": "toy", "images": [urlsafe]})).json()
    assert code == 200 and got["image_embeddings"] == want["image_embeddings"]


async def test_a_file_path_sent_as_base64_hints_at_multipart(live):
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": ["photos/cat.png"]})
    assert code == 400 and "multipart" in err["message"] and err["param"] == "images[0]"
    code, err = await post(live, "/v1/caption", {"model": "toy", "images": ["/9j/4AAQSkZJRg!"]})  # broken JPEG base64
    assert code == 400 and "multipart" not in err["message"]


async def test_every_schema_problem_is_named(live):
    code, err = await post(live, "/v1/caption", {"model": "toy", "image": "x", "num_beam": 3})
    assert code == 422
    for field in ("images", "image", "num_beam"):
        assert field in err["message"], err
    assert err["param"] == "images"


def test_serve_refuses_a_missing_model_repository(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vlserve.cli", "serve", "--model-repo", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "is not a folder" in out.stderr and "nope" in out.stderr


async def test_too_many_images_is_the_same_413_by_multipart_and_json(live, settings):
    limit, img = settings.max_images, png()
    for n in (limit + 1, limit + 6):
        r = await live.client.post("/v1/embeddings", files=[("images", ("a.png", img))] * n, data={"model": "toy"})
        encoded = [base64.b64encode(img).decode()] * n
        j = await live.client.post("/v1/embeddings", json={"model": "toy", "images": encoded})
        for answer in (r, j):
            err = answer.json()["error"]
            assert answer.status_code == 413 and err["param"] == "images" and f"the limit is {limit}" in err["message"]


def test_skipped_and_failed_folders_are_logged(tmp_path, caplog):
    from vlserve.metrics import Metrics
    from vlserve.repository.repository import ModelRepository
    from vlserve.settings import Settings

    (tmp_path / "empty").mkdir()
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "config.json").write_text("{}")
    (tmp_path / "typo" / "model.toml").write_text('famly = "blip"\\n')
    with caplog.at_level("WARNING", logger="vlserve"):
        repo = ModelRepository(Settings(model_repo=tmp_path), Metrics())
        repo.load_all()
        repo.stop()
    states = {m.name: m.state for m in repo.models.values()}
    logged = caplog.text
    assert set(states) == {"empty", "typo"} and "empty" in logged and "typo" in logged, (states, logged)


async def test_request_ids_are_echoed_made_and_logged(live, caplog):
    r = await live.client.get("/v1/models", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = (await live.client.get("/v1/models")).headers["x-request-id"]
    bad = (await live.client.get("/v1/models", headers={"X-Request-ID": "a b\\x01" * 50})).headers["x-request-id"]
    assert len(made) == 32 and made != bad and " " not in bad
    import logging

    import httpx

    from vlserve.api.middleware import RequestGuard

    async def inner(scope, receive, send):  # any route: what it logs carries the request's id
        logging.getLogger("vlserve.test").warning("inside")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=RequestGuard(inner, live.gateway)),
                               base_url="http://t")
    with caplog.at_level("WARNING"):
        r = await client.get("/x", headers={"X-Request-ID": "req-42"})
        logging.getLogger("vlserve.test").warning("outside")
    inside, outside = (next(x for x in caplog.records if x.getMessage() == m) for m in ("inside", "outside"))
    assert r.headers["x-request-id"] == "req-42" and inside.request_id == "req-42"
    assert not hasattr(outside, "request_id")  # outside a request none, so a library may pass its own in `extra`


@pytest.mark.parametrize("origins", ["", "https://app.example"])
async def test_cors_is_off_by_default_and_answers_preflights_without_a_key(repo, origins):
    from tests.api.conftest import Live
    from vlserve.settings import Settings

    async with Live(Settings(model_repo=repo, cors_origins=origins, api_key="s3cret")) as live:
        pre = await live.client.options("/v1/caption", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        other = await live.client.options("/v1/caption", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        if not origins:
            assert "access-control-allow-origin" not in pre.headers
            return
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-origin" not in other.headers
        r = await live.client.get("/v1/models", headers={"Origin": "https://app.example",
                                                         "Authorization": "Bearer s3cret"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
